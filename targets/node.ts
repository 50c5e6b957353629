// Node: node:net listeners.

import process from 'node:process'
import { listenNet, useSharedReads } from './net.ts'
import { standardHost, steadyYoungGeneration, type Runtime } from './runtime.ts'

export function node(): Runtime {
  steadyYoungGeneration(process.env.SPRIG_V8_YOUNG)
  // 64 KiB, the size Node reads into by default (a 256 KiB buffer measured no better).
  useSharedReads(64 * 1024)
  return { name: `node ${process.versions.node}`, host: standardHost, listen: listenNet }
}
