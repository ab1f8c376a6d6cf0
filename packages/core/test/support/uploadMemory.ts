/**
 * The process under measurement for StreamingFetch's test: uploads `MB` megabytes (fresh 1 MiB chunks) to `url` with
 * `StreamingFetch.fetch` or the global `fetch`, collecting garbage every 4 chunks, and prints the highest
 * `arrayBuffers` it saw (what the upload kept alive) as JSON. Run with `node --expose-gc`.
 */
import * as StreamingFetch from "../../src/StreamingFetch.ts"

const [url, which, mb] = process.argv.slice(2)
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with --expose-gc")
const base = process.memoryUsage().arrayBuffers
let peak = 0
async function* body() {
  for (let i = 0; i < Number(mb); i++) {
    if (i % 4 === 0) {
      gc!()
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - base)
    }
    yield new Uint8Array(1 << 20).fill(97 + (i % 26))
  }
}
const fetch = which === "streaming" ? StreamingFetch.fetch : globalThis.fetch
const res = await fetch(url!, { method: "POST", body: ReadableStream.from(body()), duplex: "half" } as RequestInit)
const answer = await res.json()
console.log(JSON.stringify({ peakMB: peak / (1 << 20), answer }))
