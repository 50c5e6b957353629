// Build-time stand-in for `bl` (esbuild --alias, see package.json "bundle"): mqtt-packet's
// parser uses bl() only as a byte list (append, consume, get, slice, readUInt*, length), never
// as a stream; the stream half pulls in readable-stream, ~2.5 MB of RSS on Bun.
const BufferList = require('../../node_modules/bl/BufferList.js')
module.exports = function bl(initial) {
  return new BufferList(initial)
}
module.exports.BufferList = BufferList
