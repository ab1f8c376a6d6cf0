#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=8
/**
 * The `offpeak` executable. It runs with a young generation of 8 MB
 * (`--max-semi-space-size=8`): a run allocates quickly and keeps little, and a
 * small young generation keeps the resident size near the live heap. glibc's
 * malloc gets two arenas (`MALLOC_ARENA_MAX=2`) instead of one per thread that
 * allocates (the ledger's thread, libuv's, V8's): each arena keeps what it
 * freed, ~30 MB of resident memory at a million rows for no speed.
 *
 * Node's compile cache is on before the CLI is imported: the TypeScript Node
 * strips and the code V8 compiles for each module are kept in
 * `$XDG_CACHE_HOME/offpeak/compile-cache` (default `~/.cache/offpeak/…`; the OS
 * temp folder when there is no home), so from the second command on the modules
 * are not stripped and compiled again: `offpeak --help` uses about a third less
 * CPU. Node's own `NODE_COMPILE_CACHE=<dir>` picks another folder and
 * `NODE_DISABLE_COMPILE_CACHE=1` turns it off; a folder that cannot be written
 * only means no cache.
 *
 * @since 0.1.0
 */
import * as module from "node:module"
import * as os from "node:os"
import * as path from "node:path"

/** where the compile cache lives: the user's cache folder (never the project's), else a per-user temp folder */
const cacheDir = (): string => {
  const xdg = process.env.XDG_CACHE_HOME
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, "offpeak", "compile-cache")
  let home = ""
  try {
    home = os.homedir()
  } catch {
    // no home folder for this user
  }
  return home.length > 0 && path.isAbsolute(home)
    ? path.join(home, ".cache", "offpeak", "compile-cache")
    : path.join(os.tmpdir(), `offpeak-compile-cache-${os.userInfo().uid}`)
}

// Node ≥ 22.1; NODE_COMPILE_CACHE (already on) and NODE_DISABLE_COMPILE_CACHE win, which the call reports, not throws
if (typeof module.enableCompileCache === "function" && process.env.NODE_COMPILE_CACHE === undefined) {
  try {
    module.enableCompileCache(cacheDir())
  } catch {
    // a cache is only a speed-up
  }
}

// Output whose reader went away (`offpeak status | head -1`, a `| tee` killed by Ctrl-C, a closed terminal) stops the
// command as Ctrl-C does, once: a run detaches (its batches go on; `offpeak resume` picks them up) instead of dying
// mid-write on an unhandled error, and what is still written goes nowhere. A hang-up (SIGHUP) is taken the same way.
let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  process.kill(process.pid, "SIGINT")
}
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE" && e.code !== "EIO") throw e
    stop()
  })
}
process.on("SIGHUP", stop)

// imported after the cache is on, so the CLI's modules are read from it
const Cli = await import("./Cli.ts")

Cli.main()
