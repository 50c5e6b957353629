// Shared by the config, CLI and MQTT-options tests.

import type { Test } from 'tap'
import { ConfigError } from '../../src/config.ts'

/** Runs fn, expects a ConfigError, returns its message. */
export function errorOf(t: Test, fn: () => unknown): string {
  try {
    fn()
  } catch (e) {
    t.type(e, ConfigError)
    return (e as Error).message
  }
  t.fail('expected a ConfigError')
  return ''
}
