/**
 * The body of `POST /v1/messages/batches` read as a stream: a small JSON
 * scanner finds the elements of the top-level `requests` array without
 * parsing the whole body (up to 256 MB), each element is parsed and checked
 * on its own (custom id pattern and uniqueness, `params` with `model`,
 * `max_tokens` and `messages`) and written as one line of the batch's requests
 * file. Everything else about `params` is checked when the line is answered,
 * as the real API does (it answers those lines `errored`).
 */
import * as fs from "node:fs"

/** Anthropic's rule for custom ids */
export const CUSTOM_ID = /^[a-zA-Z0-9_-]{1,64}$/

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const REQUEST_KEYS = new Set(["custom_id", "params"])

/** checks one request of a batch: the `invalid_request_error` message, or undefined */
export const checkRequest = (u: unknown, index: number, seen: Set<string>): string | undefined => {
  const at = `requests.${index}`
  if (!isObject(u)) return `${at}: Input should be a valid dictionary`
  for (const key of Object.keys(u)) if (!REQUEST_KEYS.has(key)) return `${at}.${key}: Extra inputs are not permitted`
  const id = u.custom_id
  if (id === undefined) return `${at}.custom_id: Field required`
  if (typeof id !== "string") return `${at}.custom_id: Input should be a valid string`
  if (!CUSTOM_ID.test(id)) return `${at}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'`
  if (seen.has(id)) return `${at}.custom_id: custom_id '${id}' is used by another request in this batch; custom_id must be unique`
  seen.add(id)
  const params = u.params
  if (params === undefined) return `${at}.params: Field required`
  if (!isObject(params)) return `${at}.params: Input should be a valid dictionary`
  if (params.model === undefined) return `${at}.params.model: Field required`
  if (typeof params.model !== "string") return `${at}.params.model: Input should be a valid string`
  if (params.max_tokens === undefined) return `${at}.params.max_tokens: Field required`
  if (typeof params.max_tokens !== "number" || !Number.isInteger(params.max_tokens)) {
    return `${at}.params.max_tokens: Input should be a valid integer`
  }
  if (params.max_tokens < 1) return `${at}.params.max_tokens: Input should be greater than or equal to 1`
  if (params.messages === undefined) return `${at}.params.messages: Field required`
  if (!Array.isArray(params.messages)) return `${at}.params.messages: Input should be a valid list`
  if (params.stream === true) return `${at}.params.stream: streaming is not supported in Message Batches`
  return undefined
}

// ===== the scanner =====

const S = {
  Start: 0,
  KeyOrEnd: 1,
  Key: 2,
  Key2: 3,
  Colon: 4,
  Value: 5,
  ElemOrEnd: 6,
  Elem: 7,
  Element: 8,
  CommaOrEnd: 9,
  Skip: 10,
  AfterValue: 11,
  End: 12
} as const

const isWs = (c: number) => c === 32 || c === 9 || c === 10 || c === 13

/** what the scanner found */
export interface Outcome {
  /** the first problem, as an `invalid_request_error` message */
  readonly error: string | undefined
  /** requests seen (all of them, also past an error or the limit) */
  readonly count: number
}

/**
 * Scans a `{"requests":[…]}` body chunk by chunk, calling `onElement` with
 * the bytes of every element of `requests`. Stops calling it after the first
 * error, but keeps counting.
 */
export class Scanner {
  private state: number = S.Start
  private inString = false
  private escape = false
  private depth = 0
  private key: Array<number> = []
  private parts: Array<Uint8Array> = []
  private sawRequests = false
  private count = 0
  private error: string | undefined = undefined

  private readonly onElement: (bytes: Buffer, index: number) => string | undefined

  constructor(onElement: (bytes: Buffer, index: number) => string | undefined) {
    this.onElement = onElement
  }

  private fail(message: string) {
    if (this.error === undefined) this.error = message
  }

  private element(bytes: Buffer) {
    const index = this.count++
    if (this.error === undefined) {
      const problem = this.onElement(bytes, index)
      if (problem !== undefined) this.fail(problem)
    }
  }

  /** feeds the next chunk of the body */
  push(chunk: Uint8Array): void {
    if (this.state === S.End && this.error !== undefined) return
    let start = this.state === S.Element ? 0 : -1
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!
      switch (this.state) {
        case S.Start:
          if (isWs(c)) continue
          if (c === 123) this.state = S.KeyOrEnd
          else return this.invalid()
          continue
        case S.KeyOrEnd:
        case S.Key:
          if (isWs(c)) continue
          if (c === 34) {
            this.key = []
            this.escape = false
            this.state = S.Key2
          } else if (c === 125 && this.state === S.KeyOrEnd) this.state = S.End
          else return this.invalid()
          continue
        case S.Key2:
          if (this.escape) {
            this.escape = false
            this.key.push(c)
          } else if (c === 92) {
            this.escape = true
            this.key.push(c)
          } else if (c === 34) this.state = S.Colon
          else this.key.push(c)
          continue
        case S.Colon:
          if (isWs(c)) continue
          if (c === 58) this.state = S.Value
          else return this.invalid()
          continue
        case S.Value: {
          if (isWs(c)) continue
          const key = Buffer.from(this.key).toString("utf8")
          if (key === "requests") {
            this.sawRequests = true
            if (c === 91) this.state = S.ElemOrEnd
            else {
              this.fail("requests: Input should be a valid list")
              this.beginSkip(c)
            }
          } else {
            this.fail(`${key}: Extra inputs are not permitted`)
            this.beginSkip(c)
          }
          continue
        }
        case S.ElemOrEnd:
        case S.Elem:
          if (isWs(c)) continue
          if (c === 93) {
            if (this.state === S.Elem) return this.invalid()
            this.state = S.AfterValue
            continue
          }
          this.state = S.Element
          this.parts = []
          this.depth = 0
          this.inString = false
          this.escape = false
          start = i
          // this byte is the element's first: read it again as part of the element
          i--
          continue
        case S.Element: {
          if (this.inString) {
            if (this.escape) this.escape = false
            else if (c === 92) this.escape = true
            else if (c === 34) this.inString = false
            continue
          }
          if (c === 34) this.inString = true
          else if (c === 123 || c === 91) this.depth++
          else if (c === 125 || c === 93) {
            if (this.depth === 0) {
              // the array's closing bracket right after a scalar element
              if (c !== 93) return this.invalid()
              this.finishElement(chunk, start, i)
              this.state = S.AfterValue
            } else if (--this.depth === 0) {
              this.finishElement(chunk, start, i + 1)
              this.state = S.CommaOrEnd
            }
          } else if (c === 44 && this.depth === 0) {
            this.finishElement(chunk, start, i)
            this.state = S.Elem
          }
          continue
        }
        case S.CommaOrEnd:
          if (isWs(c)) continue
          if (c === 44) this.state = S.Elem
          else if (c === 93) this.state = S.AfterValue
          else return this.invalid()
          continue
        case S.Skip:
          if (this.inString) {
            if (this.escape) this.escape = false
            else if (c === 92) this.escape = true
            else if (c === 34) this.inString = false
            continue
          }
          if (c === 34) this.inString = true
          else if (c === 123 || c === 91) this.depth++
          else if (c === 125 || c === 93) {
            if (this.depth === 0) {
              if (c !== 125) return this.invalid()
              this.state = S.End
            } else if (--this.depth === 0) this.state = S.AfterValue
          } else if (c === 44 && this.depth === 0) this.state = S.Key
          continue
        case S.AfterValue:
          if (isWs(c)) continue
          if (c === 44) this.state = S.Key
          else if (c === 125) this.state = S.End
          else return this.invalid()
          continue
        case S.End:
          if (isWs(c)) continue
          return this.invalid()
      }
    }
    if (this.state === S.Element && start >= 0) this.parts.push(chunk.subarray(start))
  }

  private beginSkip(c: number) {
    this.state = S.Skip
    this.depth = 0
    this.inString = false
    this.escape = false
    if (c === 34) this.inString = true
    else if (c === 123 || c === 91) this.depth = 1
  }

  private finishElement(chunk: Uint8Array, start: number, end: number) {
    const tail = chunk.subarray(start < 0 ? 0 : start, end)
    const bytes = this.parts.length === 0 ? Buffer.from(tail) : Buffer.concat([...this.parts, tail])
    this.parts = []
    this.element(bytes)
  }

  private invalid() {
    this.fail("The request body is not valid JSON.")
    this.state = S.End
  }

  /** the body ended */
  end(): Outcome {
    if (this.state !== S.End) this.fail("The request body is not valid JSON.")
    else if (!this.sawRequests) this.fail("requests: Field required")
    else if (this.count === 0) this.fail("requests: List should have at least 1 item after validation, not 0")
    return { error: this.error, count: this.count }
  }
}

/**
 * A scanner that checks each request and writes it as one line of `file`
 * (buffered, 1 MiB at a time); stops writing past `maxRequests` or the first
 * error.
 */
export const toFile = (file: string, maxRequests: number) => {
  const fd = fs.openSync(file, "w")
  const seen = new Set<string>()
  let pending: Array<string> = []
  let size = 0
  const flush = () => {
    if (pending.length > 0) fs.writeSync(fd, pending.join(""))
    pending = []
    size = 0
  }
  const scanner = new Scanner((bytes, index) => {
    if (index >= maxRequests) return undefined
    let value: unknown
    try {
      value = JSON.parse(bytes.toString("utf8"))
    } catch {
      return `requests.${index}: Input should be a valid dictionary (the element is not valid JSON)`
    }
    const problem = checkRequest(value, index, seen)
    if (problem !== undefined) return problem
    const line = JSON.stringify(value) + "\n"
    pending.push(line)
    size += line.length
    if (size >= 1 << 20) flush()
    return undefined
  })
  return {
    push: (chunk: Uint8Array) => scanner.push(chunk),
    /** flushes and closes the file; the outcome, with the request limit checked */
    end: (): Outcome => {
      try {
        flush()
      } finally {
        fs.closeSync(fd)
      }
      const outcome = scanner.end()
      if (outcome.error === undefined && outcome.count > maxRequests) {
        return {
          error: `requests: List should have at most ${maxRequests} items after validation, not ${outcome.count}`,
          count: outcome.count
        }
      }
      return outcome
    },
    abort: () => {
      try {
        fs.closeSync(fd)
      } catch {
        // already closed
      }
      fs.rmSync(file, { force: true })
    }
  }
}
