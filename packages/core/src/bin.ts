#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=8
/**
 * The `offpeak` executable. It runs with a young generation of 8 MB
 * (`--max-semi-space-size=8`): a run allocates quickly and keeps little, and a
 * small young generation keeps the resident size near the live heap. glibc's
 * malloc gets two arenas (`MALLOC_ARENA_MAX=2`) instead of one per thread that
 * allocates (the ledger's thread, libuv's, V8's): each arena keeps what it
 * freed, ~30 MB of resident memory at a million rows for no speed.
 *
 * @since 0.1.0
 */
import * as Cli from "./Cli.ts"

Cli.main()
