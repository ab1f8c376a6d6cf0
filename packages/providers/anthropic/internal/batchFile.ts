/**
 * Reading a batch file (one encoded request line per line, as
 * `AnthropicBatch.encode` wrote them) without loading it whole: the body of
 * `POST /v1/messages/batches` streamed straight from the file, and the set of
 * its custom ids.
 */
// the file helpers alone (the kit also has the emulators' server)
import * as Files from "../../local/internal/files.ts"

/**
 * The JSON body `{"requests":[line,line,…]}` of a batch file, as byte chunks
 * of about 1 MiB: each line is already a `{"custom_id","params"}` object, so
 * the body is the lines joined by commas, never parsed nor held whole.
 */
export const requestBody = (file: string): AsyncGenerator<Uint8Array> => Files.joinedLines(file, `{"requests":[`, "]}")

const CUSTOM_ID_PREFIX = /^\{"custom_id":"([A-Za-z0-9_-]{1,64})"/

/** the custom ids of a batch file's lines */
export const customIds = async (file: string): Promise<Set<string>> => {
  const ids = new Set<string>()
  for await (const line of Files.lines(file)) {
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
