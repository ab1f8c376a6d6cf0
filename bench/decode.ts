/**
 * What decoding a results download in pieces of at most 64 KiB is worth: `Provider.textLines` against
 * `Stream.decodeText` + `Stream.splitLines` on the same chunks, in one process, the two alternating.
 *
 *   scripts/with-node.sh node --max-semi-space-size=8 bench/decode.ts
 *   scripts/with-node.sh node --max-semi-space-size=8 bench/decode.ts --mb 45 --chunk-kb 256 --repeat 9
 *
 * The input is `--mb` MB of ASCII result lines (~900 bytes each, like an OpenAI output file) cut into chunks of
 * `--chunk-kb` KiB, as a fetch body hands them over on loopback (64 KiB to a few hundred). V8 makes a string of
 * 128 KiB or more as a large object of its own, ~30× slower per byte than a small one; `textLines` decodes views of
 * at most 64 KiB. Prints the median ms of each side, their ratio, and checks both give the same lines.
 */
import * as Provider from "@offpeak/core/Provider"
import { Effect, Stream } from "effect"
import { parseArgs } from "node:util"

const { values } = parseArgs({
  options: {
    mb: { type: "string", default: "9" },
    "chunk-kb": { type: "string", default: "256" },
    repeat: { type: "string", default: "7" }
  }
})
const line = (i: number) =>
  JSON.stringify({
    id: `batch_req_${i}`,
    custom_id: i.toString(16).padStart(64, "0"),
    response: { status_code: 200, body: { choices: [{ message: { content: `{"category":"billing","urgent":${i % 2 === 0}}` } }], filler: "x".repeat(600) } }
  })
const lines: Array<string> = []
let size = 0
for (let i = 0; size < Number(values.mb) * 1e6; i++) {
  const l = line(i)
  lines.push(l)
  size += l.length + 1
}
const bytes = new TextEncoder().encode(lines.join("\n") + "\n")
const chunk = Number(values["chunk-kb"]) * 1024
const chunks: Array<Uint8Array> = []
for (let at = 0; at < bytes.byteLength; at += chunk) chunks.push(bytes.subarray(at, at + chunk))

const sides = {
  "decodeText + splitLines": () => Stream.fromIterable(chunks).pipe(Stream.decodeText(), Stream.splitLines),
  "Provider.textLines": () => Provider.textLines(Stream.fromIterable(chunks))
}
const times: Record<string, Array<number>> = { "decodeText + splitLines": [], "Provider.textLines": [] }
for (let r = 0; r < Number(values.repeat); r++) {
  for (const [name, make] of Object.entries(sides)) {
    const t0 = performance.now()
    const out = await Effect.runPromise(Stream.runFold(make(), () => 0, (n, text) => n + (text.length > 0 ? 1 : 0)))
    times[name]!.push(performance.now() - t0)
    if (out !== lines.length) throw new Error(`${name}: ${out} lines, expected ${lines.length}`)
  }
}
const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const base = median(times["decodeText + splitLines"]!)
const ours = median(times["Provider.textLines"]!)
console.log(`${(bytes.byteLength / 1e6).toFixed(1)} MB, ${lines.length} lines, chunks of ${values["chunk-kb"]} KiB, median of ${values.repeat}`)
console.log(`decodeText + splitLines  ${base.toFixed(1)} ms`)
console.log(`Provider.textLines       ${ours.toFixed(1)} ms   ratio ${(ours / base).toFixed(2)}`)
