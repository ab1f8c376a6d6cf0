/**
 * Keeps the process's memory near its live set. A run allocates quickly and
 * keeps little (a part, a page, a chunk of results), and V8 lets garbage pile
 * up to several times the live heap before it collects, which shows as a
 * resident size far above what the run holds. After each admitted chunk,
 * each batch and each delivered part the runner asks for a full collection
 * when the heap has grown {@link THRESHOLD} past what was live after the
 * previous one: about one collection (tens of milliseconds) per 7,000 rows.
 *
 * @internal
 */
import * as v8 from "node:v8"
import * as vm from "node:vm"

/** garbage (bytes over the heap measured after the last collection) that is worth a collection */
export const THRESHOLD = 24 * 1024 * 1024

let collect: (() => void) | undefined | null

const collector = (): (() => void) | null => {
  if (collect !== undefined) return collect
  try {
    v8.setFlagsFromString("--expose-gc")
    collect = vm.runInNewContext("gc") as () => void
  } catch {
    collect = null
  }
  return collect
}

/** the heap right after the last full collection: what the run holds */
let live = 0

/** a full collection when the heap grew {@link THRESHOLD} past what the run held after the last one */
export const compact = (): void => {
  if (process.memoryUsage().heapUsed < live + THRESHOLD) return
  const gc = collector()
  if (gc === null) return
  gc()
  live = process.memoryUsage().heapUsed
}
