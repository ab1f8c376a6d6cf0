/**
 * Keeps the process's memory near its live set. A run allocates quickly and
 * keeps little (a part, a page, a chunk of results), and V8 lets garbage pile
 * up to several times the live heap before it collects, which shows as a
 * resident size far above what the run holds. After each batch and each
 * delivered part the runner asks for a full collection when the heap has
 * grown past {@link THRESHOLD}: a few milliseconds every few seconds.
 *
 * @internal
 */
import * as v8 from "node:v8"
import * as vm from "node:vm"

/** heap size (bytes) above which a collection is worth it */
export const THRESHOLD = 64 * 1024 * 1024

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

/** a full collection when the heap grew past the threshold */
export const compact = (): void => {
  if (process.memoryUsage().heapTotal < THRESHOLD) return
  collector()?.()
}
