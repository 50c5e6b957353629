// The monitoring listeners: node:http (the same on Node, Bun and Deno), GET only, JSON out.
// HTTPS (https_port) puts the same handler behind the TLS handshake every other listener uses
// (upgradeSocket), so client certificates are verified and refusals logged the same way.
// What each endpoint says is decided in src/monitor.ts.

import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import process from 'node:process'
import { monitorRequest } from '../src/monitor.ts'
import type { Server } from '../src/server.ts'
import { listenError, plainAddress, type Listener } from './runtime.ts'
import { upgradeSocket, type ServerTls } from './tls.ts'

export function listenMonitor(srv: Server, host: string, port: number, tls?: ServerTls): Promise<Listener> {
  const cores = os.cpus().length
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://monitor')
    const reply =
      req.method === 'GET' || req.method === 'HEAD'
        ? monitorRequest(srv, url.pathname, url.searchParams, { mem: process.memoryUsage.rss(), cores })
        : { status: 405, body: { error: 'only GET is served' } }
    const body = JSON.stringify(reply.body, null, 2)
    res.writeHead(reply.status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
    res.end(req.method === 'HEAD' ? undefined : body)
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
        sock.on('error', () => {})
        const peer = `${plainAddress(sock.remoteAddress)}:${sock.remotePort ?? 0} - https`
        upgradeSocket(sock, tls, peer, (ts) => server.emit('connection', ts), () => {})
      })
    : server
  if (!tls) server.on('connection', track)
  return new Promise((resolve, reject) => {
    front.once('error', (e) => reject(listenError(host, port, e)))
    front.listen({ host, port }, () => {
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
