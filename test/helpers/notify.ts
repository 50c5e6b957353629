// A stand-in for systemd's end of NOTIFY_SOCKET: a real AF_UNIX datagram socket (Python's,
// since Node has none), which records each datagram with its arrival time (wall ms and
// CLOCK_MONOTONIC µs) and, like systemd, closes any file descriptors passed with it
// (systemd-notify's BARRIER=1 waits for that).

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const RECEIVER = `
import array, json, os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + path[1:] if path.startswith('@') else path)
print('bound', flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(64))
    for lvl, typ, data in anc:
        if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array('i')
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(json.dumps({'t': time.time() * 1000, 'mono': time.monotonic_ns() // 1000, 'msg': msg.decode('utf-8', 'replace')}), flush=True)
`

export interface Datagram {
  /** Wall clock ms at arrival. */
  t: number
  /** CLOCK_MONOTONIC µs at arrival. */
  mono: number
  msg: string
}

export interface NotifySocket {
  /** The NOTIFY_SOCKET value: a path, or @name (abstract). */
  readonly path: string
  readonly got: Datagram[]
  /** Resolves with the first datagram (from index `from` on) containing `line`. */
  wait(line: string, ms?: number, from?: number): Promise<Datagram>
  close(): void
}

export async function notifySocket(abstract = false): Promise<NotifySocket> {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-notify-'))
  writeFileSync(join(dir, 'recv.py'), RECEIVER)
  const path = abstract ? `@sprig-notify-${process.pid}-${Math.random().toString(36).slice(2)}` : join(dir, 'notify.sock')
  const p: ChildProcess = spawn('python3', [join(dir, 'recv.py'), path], { stdio: ['ignore', 'pipe', 'inherit'] })
  const got: Datagram[] = []
  let buf = ''
  let bound: () => void
  const ready = new Promise<void>((r) => (bound = r))
  const waiters = new Set<() => void>()
  p.stdout!.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (l === 'bound') bound()
      else got.push(JSON.parse(l) as Datagram)
    }
    for (const w of waiters) w()
  })
  await Promise.race([ready, new Promise((_, rej) => setTimeout(() => rej(new Error('notify receiver did not start')), 10_000))])
  return {
    path,
    got,
    wait(line, ms = 10_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const d = got.slice(from).find((g) => g.msg.split('\n').includes(line))
          if (!d) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(d)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no ${line} within ${ms} ms; got ${JSON.stringify(got.map((g) => g.msg))}`))
        }, ms)
        waiters.add(check)
        check()
      })
    },
    close() {
      p.kill()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
