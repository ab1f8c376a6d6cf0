/**
 * Who this process is, for the ledger's leases, and whether a lease's holder on this host is still alive.
 *
 * @internal
 */
import * as fs from "node:fs"
import * as os from "node:os"

/** the identity a lease records */
export interface Holder {
  /** unique per process (host, pid, a random tag): a restarted process with a reused pid is another owner */
  readonly owner: string
  readonly host: string
  readonly pid: number
  /** the process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the holder */
  readonly pidStart: string | null
}

/** field 22 of /proc/<pid>/stat (start time), and whether the process is a zombie; undefined where /proc is absent */
const procStat = (pid: number): { readonly start: string; readonly zombie: boolean } | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // the command name (field 2) is in parentheses and may hold spaces: fields after it are split from its end
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { start: rest[19] ?? "", zombie: rest[0] === "Z" }
  } catch {
    return undefined
  }
}

const hostName = (): string => process.env.OFFPEAK_HOST ?? os.hostname()

let me: Holder | undefined

/** this process */
export const self = (): Holder => {
  if (me === undefined) {
    const host = hostName()
    me = {
      owner: `${host}:${process.pid}:${Math.random().toString(36).slice(2, 10)}`,
      host,
      pid: process.pid,
      pidStart: procStat(process.pid)?.start ?? null
    }
  }
  return me
}

/**
 * Whether the holder of a lease is alive: `false` when it ran on this host and its process is gone (or a zombie, or
 * its pid now belongs to a process started later); `true` when it is alive here; `undefined` on another host (its
 * lease can only expire).
 */
export const isAlive = (holder: { readonly host: string; readonly pid: number; readonly pidStart: string | null }): boolean | undefined => {
  if (holder.host !== hostName()) return undefined
  try {
    process.kill(holder.pid, 0)
  } catch (e) {
    // EPERM: the process exists, owned by someone else
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
  const stat = procStat(holder.pid)
  if (stat === undefined) return true
  if (stat.zombie) return false
  return holder.pidStart === null || stat.start === holder.pidStart
}
