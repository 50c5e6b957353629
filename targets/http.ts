// The monitoring listener: node:http (the same on Node, Bun and Deno), GET only, JSON out.
// What each endpoint says is decided in src/monitor.ts.

import http from 'node:http'
import os from 'node:os'
import process from 'node:process'
import { monitorRequest } from '../src/monitor.ts'
import type { Server } from '../src/server.ts'
import { listenError, type Listener } from './runtime.ts'

export function listenMonitor(srv: Server, host: string, port: number): Promise<Listener> {
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
  let open = 0
  server.on('connection', (sock) => {
    open++
    sock.on('close', () => open--)
  })
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(listenError(host, port, e)))
    server.listen({ host, port }, () => {
      const addr = server.address() as { port: number }
      resolve({
        port: addr.port,
        close: () => {
          server.close()
          server.closeAllConnections?.()
        },
        open: () => open,
      })
    })
  })
}
