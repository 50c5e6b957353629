// The monitoring listeners: node:http (the same on Node, Bun and Deno), GET only, JSON out.
// HTTPS (https_port) puts the same handler behind the TLS handshake every other listener uses
// (upgradeSocket), so client certificates are verified and refusals logged the same way.
// What each endpoint says is decided in src/monitor.ts.

import { nodeHttp } from './lazy.ts'
import net from 'node:net'
import { monitorTarget, type Reply } from '../src/monitor.ts'
import { STATUS_PAGE, STATUS_PAGE_HEADERS } from '../src/status-page.ts'
import type { Server } from '../src/server.ts'
import { acceptFailed, END_GRACE_MS, listenError, plainAddress, type Listener } from './runtime.ts'
import { upgradeSocket, type ServerTls } from './tls.ts'

export function listenMonitor(srv: Server, host: string, port: number, tls?: ServerTls): Promise<Listener> {
  const log = srv.log
  const server = nodeHttp().createServer((req, res) => {
    const peer = `${plainAddress(req.socket.remoteAddress)}:${req.socket.remotePort ?? 0}`
    if ((req.method === 'GET' || req.method === 'HEAD') && (req.url === '/' || req.url?.startsWith('/?'))) {
      // The live status page (src/status-page.ts); the JSON endpoints stay where they are.
      res.writeHead(200, { ...STATUS_PAGE_HEADERS, 'content-length': PAGE.length })
      return void res.end(req.method === 'HEAD' ? undefined : PAGE)
    }
    let reply: Reply
    try {
      reply =
        req.method === 'GET' || req.method === 'HEAD'
          ? monitorTarget(srv, req.url ?? '')
          : { status: 405, body: { error: 'only GET is served' } }
    } catch (e) {
      // A bug of ours, not the client's: logged, answered, and the broker goes on.
      log.error(`${peer} - monitoring request ${JSON.stringify(req.url)} failed: ${(e as Error).message}`)
      log.debug(() => `${(e as Error).stack}`)
      reply = { status: 500, body: { error: 'internal error' } }
    }
    if (reply.status === 400) log.debug(() => `${peer} - monitoring: bad request target ${JSON.stringify(req.url)}`)
    const body = reply.type !== undefined ? String(reply.body) : JSON.stringify(reply.body, null, 2)
    res.writeHead(reply.status, { 'content-type': reply.type ?? 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  // A request node:http cannot parse at all (a broken request line, oversized headers): a
  // JSON 400 (431 for headers) and that socket closed; nothing else is affected.
  server.on('clientError', (err: Error & { code?: string }, sock: net.Socket) => {
    const peer = `${plainAddress(sock.remoteAddress)}:${sock.remotePort ?? 0}`
    log.debug(() => `${peer} - monitoring: ${err.code ?? ''} ${err.message}`)
    if (!sock.writable || err.code === 'ECONNRESET') return void sock.destroy()
    const big = err.code === 'HPE_HEADER_OVERFLOW'
    const body = JSON.stringify({ error: big ? 'request headers too large' : 'bad request' })
    sock.end(
      `HTTP/1.1 ${big ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\ncontent-type: application/json\r\n` +
        `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    )
    setTimeout(() => sock.destroy(), END_GRACE_MS).unref()
  })
  // Monitoring must never hold the broker up: short timeouts, no keep-alive pile-up.
  server.keepAliveTimeout = 1000
  server.headersTimeout = 5000
  server.requestTimeout = 5000
  const sockets = new Set<net.Socket>()
  const track = (sock: net.Socket): void => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
  }
  // HTTPS: accept plain sockets and hand each to http only once its TLS handshake passed.
  const front = tls
    ? net.createServer((sock) => {
        track(sock)
        const peer = `${plainAddress(sock.remoteAddress)}:${sock.remotePort ?? 0} - https`
        // 'close' follows an error; the TLS layer logs handshake failures itself.
        sock.on('error', (e) => log.debug(() => `${peer}: ${e.message}`))
        upgradeSocket(sock, tls, peer, (ts) => server.emit('connection', ts), loggedByTls)
      })
    : server
  if (!tls) server.on('connection', track)
  return new Promise((resolve, reject) => {
    const failed = (e: Error): void => reject(listenError(host, port, e))
    front.once('error', failed)
    front.listen({ host, port }, () => {
      // From now on an error is a failed accept (EMFILE ...): logged, never fatal.
      front.removeListener('error', failed)
      front.on('error', acceptFailed)
      const addr = front.address() as net.AddressInfo
      resolve({
        port: addr.port,
        close: () => {
          front.close()
          server.closeAllConnections?.()
          for (const s of sockets) s.destroy()
        },
        open: () => sockets.size,
      })
    })
  })
}

const PAGE = Buffer.from(STATUS_PAGE)

/** A failed HTTPS handshake: tls.ts has logged the reason and destroyed the socket. */
function loggedByTls(): void {}
