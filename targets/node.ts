// Node: node:net listeners.

import process from 'node:process'
import { listenNet } from './net.ts'
import { standardHost, type Runtime } from './runtime.ts'

export function node(): Runtime {
  return { name: `node ${process.versions.node}`, host: standardHost, listen: listenNet }
}
