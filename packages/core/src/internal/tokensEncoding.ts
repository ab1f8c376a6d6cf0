/**
 * The BPE encodings of OpenAI models (gpt-tokenizer), loaded on first use and
 * counted as ordinary text: a special token such as `<|endoftext|>` inside user
 * data is counted as the plain characters it is made of, never thrown on.
 */
import { createRequire } from "node:module"

/** the encodings offpeak counts with */
export type Encoding = "o200k_base" | "cl100k_base"

interface Encoder {
  readonly countTokens: (text: string, options: { readonly disallowedSpecial: Set<string> }) => number
  readonly encode: (text: string, options: { readonly disallowedSpecial: Set<string> }) => Array<number>
}

interface Mapping {
  readonly modelToEncodingMap: Record<string, string>
}

const require = createRequire(import.meta.url)

/** no special token is recognised: `<|endoftext|>` in user text is text (tiktoken's `encode_ordinary`) */
const ORDINARY = { disallowedSpecial: new Set<string>() }

const encoders = new Map<Encoding, Encoder>()

const encoder = (encoding: Encoding): Encoder => {
  let e = encoders.get(encoding)
  if (e === undefined) {
    // the CommonJS build, required lazily: a process that never counts never loads the 2-4 MB rank tables
    e = require(`gpt-tokenizer/encoding/${encoding}`) as Encoder
    encoders.set(encoding, e)
  }
  return e
}

const WARM_UP = "The quick brown fox — jumps over 13 lazy dogs! {\"category\": \"billing\", \"urgent\": true} naïve café 東京 🎉\n\t"

/** loads an encoding now (it takes 0.3-1.5 s and about 80 MB) and warms its code up, so the first counts do not pay for it */
export const preload = (encoding: Encoding): void => {
  const e = encoder(encoding)
  for (let i = 0; i < 50; i++) e.countTokens(`${WARM_UP}${i}`, ORDINARY)
}

let mapping: Mapping["modelToEncodingMap"] | undefined

/** gpt-tokenizer's model → encoding table (models it does not list use o200k_base) */
export const modelEncodings = (): Mapping["modelToEncodingMap"] => {
  if (mapping === undefined) mapping = (require("gpt-tokenizer/mapping") as Mapping).modelToEncodingMap
  return mapping
}

/** strings at least this long are remembered (system prompts and schemas repeat on every row) */
const MEMO_MIN_LENGTH = 128
const MEMO_MAX_ENTRIES = 4096
const memos = new Map<Encoding, Map<string, number>>()

/** the number of tokens of `text` in `encoding`, special tokens counted as ordinary text */
export const count = (text: string, encoding: Encoding): number => {
  if (text.length === 0) return 0
  if (text.length < MEMO_MIN_LENGTH) return encoder(encoding).countTokens(text, ORDINARY)
  let memo = memos.get(encoding)
  if (memo === undefined) {
    memo = new Map()
    memos.set(encoding, memo)
  }
  const known = memo.get(text)
  if (known !== undefined) return known
  const n = encoder(encoding).countTokens(text, ORDINARY)
  if (memo.size >= MEMO_MAX_ENTRIES) memo.clear()
  memo.set(text, n)
  return n
}

/** the tokens of `text` in `encoding`, special tokens as ordinary text */
export const encode = (text: string, encoding: Encoding): Array<number> => encoder(encoding).encode(text, ORDINARY)
