/**
 * Reading a batch file (one encoded request line per line, as
 * `AnthropicBatch.encode` wrote them) without loading it whole: the body of
 * `POST /v1/messages/batches` streamed straight from the file, and the set of
 * its custom ids.
 */
import * as fs from "node:fs"

const OPEN = Buffer.from(`{"requests":[`)
const CLOSE = Buffer.from(`]}`)
const COMMA = Buffer.from(",")

const isBlank = (data: Buffer, start: number, end: number) => {
  for (let i = start; i < end; i++) {
    const c = data[i]
    if (c !== 32 && c !== 9 && c !== 13) return false
  }
  return true
}

/** every non-blank line of a file (without its `\n` / `\r\n`), read 1 MiB at a time */
async function* lines(file: string): AsyncGenerator<Buffer> {
  let carry: Buffer | null = null
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) {
    const data: Buffer = carry !== null ? Buffer.concat([carry, chunk as Buffer]) : (chunk as Buffer)
    let start = 0
    while (true) {
      const nl = data.indexOf(10, start)
      if (nl < 0) break
      const end = nl > start && data[nl - 1] === 13 ? nl - 1 : nl
      if (!isBlank(data, start, end)) yield data.subarray(start, end)
      start = nl + 1
    }
    carry = start < data.length ? Buffer.from(data.subarray(start)) : null
  }
  if (carry !== null) {
    const end = carry[carry.length - 1] === 13 ? carry.length - 1 : carry.length
    if (!isBlank(carry, 0, end)) yield carry.subarray(0, end)
  }
}

/**
 * The JSON body `{"requests":[line,line,…]}` of a batch file, as byte chunks
 * of about 1 MiB: each line is already a `{"custom_id","params"}` object, so
 * the body is the lines joined by commas, never parsed nor held whole.
 */
export async function* requestBody(file: string): AsyncGenerator<Uint8Array> {
  const pending: Array<Buffer> = [OPEN]
  let size = OPEN.length
  let first = true
  for await (const line of lines(file)) {
    if (!first) {
      pending.push(COMMA)
      size += 1
    }
    first = false
    pending.push(Buffer.from(line))
    size += line.length
    if (size >= 1 << 20) {
      yield Buffer.concat(pending)
      pending.length = 0
      size = 0
    }
  }
  pending.push(CLOSE)
  yield Buffer.concat(pending)
}

const CUSTOM_ID_PREFIX = /^\{"custom_id":"([A-Za-z0-9_-]{1,64})"/

/** the custom ids of a batch file's lines */
export const customIds = async (file: string): Promise<Set<string>> => {
  const ids = new Set<string>()
  for await (const line of lines(file)) {
    // encode writes `custom_id` first; anything else is parsed in full
    const head = line.toString("utf8", 0, Math.min(line.length, 96))
    const match = CUSTOM_ID_PREFIX.exec(head)
    if (match !== null) {
      ids.add(match[1]!)
      continue
    }
    try {
      const parsed = JSON.parse(line.toString("utf8")) as { custom_id?: unknown }
      if (typeof parsed.custom_id === "string") ids.add(parsed.custom_id)
    } catch {
      // a line that is not JSON names no request
    }
  }
  return ids
}
