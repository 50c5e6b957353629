// Node: node:net listeners.

import process from 'node:process'
import { listenNet } from './net.ts'
import { standardHost, steadyYoungGeneration, type Runtime } from './runtime.ts'

export function node(): Runtime {
  steadyYoungGeneration(process.env.SPRIG_V8_YOUNG)
  return { name: `node ${process.versions.node}`, host: standardHost, listen: listenNet }
}
