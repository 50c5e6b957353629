// The store's file access (src/host.ts Files) over node:fs: the same on Node, Bun, Deno and the
// compiled binaries. Sync calls for appends and reads (they hit the page cache); fdatasync runs
// in the background so the event loop keeps reading sockets while the disk catches up.

import fs from 'node:fs'
import process from 'node:process'
import type { Files } from '../src/host.ts'

export const nodeFiles: Files = {
  mkdir: (p) => void fs.mkdirSync(p, { recursive: true }),
  list(p) {
    try {
      return fs.readdirSync(p)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw e
    }
  },
  open: (p) => fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o640),
  openRead: (p) => fs.openSync(p, 'r'),
  read: (fd, buf, pos) => fs.readSync(fd, buf, 0, buf.length, pos),
  write(fd, data, pos) {
    let off = 0
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off, pos + off)
  },
  size: (fd) => fs.fstatSync(fd).size,
  truncate: (fd, len) => fs.ftruncateSync(fd, len),
  sync: (fd, done) => fs.fdatasync(fd, (e) => done(e ? (e.code ?? e.message) : null)),
  close: (fd) => fs.closeSync(fd),
  remove(p) {
    try {
      fs.unlinkSync(p)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    }
  },
  readText(p) {
    try {
      return fs.readFileSync(p, 'utf8')
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw e
    }
  },
  writeText(p, text) {
    const tmp = `${p}.tmp`
    const fd = fs.openSync(tmp, 'w', 0o640)
    try {
      fs.writeSync(fd, text)
      fs.fdatasyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(tmp, p)
  },
  createOnly(p, text) {
    let fd: number
    try {
      fd = fs.openSync(p, 'wx', 0o640)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false
      throw e
    }
    try {
      fs.writeSync(fd, text)
    } finally {
      fs.closeSync(fd)
    }
    return true
  },
  alive(pid) {
    try {
      process.kill(pid, 0)
      return true
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM'
    }
  },
  pid: process.pid,
}
