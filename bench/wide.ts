/**
 * The wide-rows scenario of the benchmark: its input (tickets whose text is ~5 KB or ~50 KB) and offpeak's pipeline
 * for it. The requests ask for a two-field label with at most 20 output tokens, so the answer side stays small and
 * memory follows the rows' width; the sink's rows are `{ id, output }` (the text is not written back).
 *
 * The text is deterministic and varied (support-ticket words mixed with pseudo-words from syllables, numbers,
 * punctuation, sentences of 6 to 24 words): token counting in the emulator sees text that tokenizes like prose,
 * not one repeated character. The CSV is written streaming (a 100,000 × 50 KB input is ~5 GB) to `<file>.tmp` and
 * renamed when complete, so an interrupted generation is never reused.
 */
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import { Csv } from "@offpeak/io/csv"
import { Jsonl } from "@offpeak/io/jsonl"
import { Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { prng } from "../test/support/files.ts"

/** a row of the wide input */
export const WideTicket = Schema.Struct({ id: Schema.NonEmptyString, text: Schema.String })
export type WideTicket = typeof WideTicket.Type

/** the small answer the wide scenario asks for (about 12 tokens as JSON, under the 20 it may take) */
export const ShortLabel = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "account", "feature", "shipping", "other"]),
  urgent: Schema.Boolean
}).annotate({ title: "ShortLabel" })
export type ShortLabel = typeof ShortLabel.Type

/** output tokens a wide request may take (both sides of the benchmark) */
export const MAX_TOKENS = 20
export const SYSTEM = "Label the ticket."

/** the same schema as JSON Schema, as a hand-written baseline pastes it in */
export const shortLabelJsonSchema = {
  type: "object",
  properties: {
    category: { type: "string", enum: ["billing", "bug", "account", "feature", "shipping", "other"] },
    urgent: { type: "boolean" }
  },
  required: ["category", "urgent"],
  additionalProperties: false,
  title: "ShortLabel"
}

const TICKET_WORDS = (
  "invoice refund charged twice billing card login password account locked email crash export report bug error " +
  "dashboard slow search broken feature request dark mode api bulk edit shipping package arrived tracking label " +
  "address order wrong item urgent blocked please help today since yesterday version update mobile desktop browser " +
  "settings profile subscription plan upgrade downgrade cancel the a and of to in is it for on with that this was " +
  "we you they have not but from our your when after before again still every customer support team reply"
).split(" ")
const SYLLABLES = (
  "ka ro mi tel san dor vu pex qui lan bri sto mer fal gon tri ux ya zel hob nup wic dra ple ost em ith ar " +
  "ven clo ser ban tur ilm ech oph"
).split(" ")

/** one sentence: 6 to 24 words, mostly ticket words, some pseudo-words and numbers, capitalised, ending in . ? or ! */
const sentence = (rand: () => number): string => {
  const n = 6 + Math.floor(rand() * 19)
  const words: Array<string> = []
  for (let i = 0; i < n; i++) {
    const r = rand()
    if (r < 0.62) words.push(TICKET_WORDS[Math.floor(rand() * TICKET_WORDS.length)]!)
    else if (r < 0.94) {
      let w = ""
      for (let s = 1 + Math.floor(rand() * 3); s > 0; s--) w += SYLLABLES[Math.floor(rand() * SYLLABLES.length)]!
      words.push(w)
    } else words.push(String(Math.floor(rand() * 100_000)))
    if (i < n - 1 && rand() < 0.08) words[i] += ","
  }
  const first = words[0]!
  words[0] = first[0]!.toUpperCase() + first.slice(1)
  const r = rand()
  return words.join(" ") + (r < 0.8 ? "." : r < 0.9 ? "?" : "!")
}

/** a text of about `bytes` bytes (ASCII): whole sentences until the size is reached */
export const wideText = (rand: () => number, bytes: number): string => {
  const parts: Array<string> = []
  let size = 0
  while (size < bytes) {
    const s = sentence(rand)
    parts.push(s)
    size += s.length + 1
  }
  return parts.join(" ")
}

/** the id of row `i` (1-based), as every benchmark input numbers its rows */
export const idOf = (i: number) => `r${String(i).padStart(6, "0")}`

/**
 * Writes a CSV (`id,text`, the text always quoted) of `rows` rows whose text is `width` bytes ± 10 %, streaming, unless
 * `file` exists already (a previous complete generation). Resolves to the file's size in bytes.
 */
export const writeWide = async (file: string, rows: number, width: number, seed = 42): Promise<number> => {
  if (fs.existsSync(file)) return fs.statSync(file).size
  const tmp = `${file}.tmp`
  const out = fs.createWriteStream(tmp)
  const rand = prng(seed)
  const write = (chunk: string) =>
    out.write(chunk) ? Promise.resolve() : new Promise<void>((resolve) => out.once("drain", () => resolve()))
  let buffer = "id,text\n"
  for (let i = 1; i <= rows; i++) {
    const target = Math.round(width * (0.9 + 0.2 * rand()))
    // every row starts with its number so no two rows ask the same question (nothing served from a cache)
    buffer += `${idOf(i)},"${i}: ${wideText(rand, target - String(i).length - 2)}"\n`
    if (buffer.length >= 1 << 20) {
      await write(buffer)
      buffer = ""
    }
  }
  await write(buffer)
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())))
  fs.renameSync(tmp, file)
  return fs.statSync(file).size
}

/** the input file of `rows` rows of `width` bytes in `dir` */
export const inputPath = (dir: string, rows: number, width: number) => path.join(dir, `wide-${width}-${rows}.csv`)

/** the request of a wide row: the same on both sides of the benchmark */
export const request = (ticket: WideTicket) =>
  Request.chat({ model: "gpt-4o-mini", system: SYSTEM, prompt: ticket.text, maxTokens: MAX_TOKENS, temperature: 0 })

/** offpeak's pipeline for the wide scenario: CSV → ShortLabel → JSONL of `{ id, output }` */
export const make = (options: {
  readonly input: string
  readonly out: string
  readonly maxRequests: number
  readonly maxInFlight: number
  readonly maxBytes?: number | undefined
}) =>
  Pipeline.make({
    name: "wide",
    source: Csv.source({ path: options.input, schema: WideTicket }),
    key: (t) => t.id,
    request,
    output: ShortLabel,
    outputName: "label",
    row: (s) => ({ id: s.key, output: s.output }),
    sink: Jsonl.sink({ dir: options.out }),
    deadLetter: Jsonl.sink({ dir: path.join(options.out, "dead-letter") }),
    // batches close on size only (requests or the provider's bytes), as the baseline's
    batch: { maxRequests: options.maxRequests, maxBytes: options.maxBytes, maxInFlight: options.maxInFlight, flushAfter: "1 hour" },
    retry: { backoff: "50 millis" }
  })
