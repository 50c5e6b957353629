// Build-time stand-in for the `debug` package (esbuild --alias, see package.json "bundle"):
// mqtt-packet logs through it only when DEBUG=mqtt-packet:* is set, and the real package
// (with supports-color, tty, util) costs ~2 MB of RSS on Bun for nothing.
module.exports = function debug() {
  const log = function () {}
  log.enabled = false
  return log
}
