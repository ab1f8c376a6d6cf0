/**
 * A `fetch` for uploads whose request body is streamed with backpressure.
 *
 * Node's own `fetch` keeps every chunk of a streamed request body alive until the request ends: uploading a 200 MB
 * batch file held about 200 MB of buffers in the process (measured with the OpenAI SDK and with a plain
 * `ReadableStream`, garbage collected every few chunks; `test/StreamingFetch.test.ts` shows it at 64 MB). This one
 * sends a streamed body (a `ReadableStream` or an async iterable) through `node:http` / `node:https`, reading the next
 * chunk only once the socket took the last and keeping none: an upload holds a few buffers, whatever the file's size. Any other request
 * (no body, a string, bytes, a form, a `Request` object) or a process configured for a proxy (`HTTPS_PROXY`,
 * `HTTP_PROXY`) goes to the global `fetch` unchanged.
 *
 * Give it to an SDK client for its upload calls only:
 *
 * @example
 * ```ts
 * const uploads = client.withOptions({ fetch: StreamingFetch.fetch })
 * await uploads.files.create({ file: fs.createReadStream(path), purpose: "batch" })
 * ```
 *
 * @since 0.1.0
 */
import * as http from "node:http"
import * as https from "node:https"
import { Readable } from "node:stream"
import type { ReadableStream as NodeReadableStream } from "node:stream/web"
import * as zlib from "node:zlib"

const NULL_BODY = new Set([101, 103, 204, 205, 304])

const isAsyncIterable = (u: unknown): u is AsyncIterable<Uint8Array | string> =>
  typeof u === "object" && u !== null && Symbol.asyncIterator in u

const isReadableStream = (u: unknown): u is ReadableStream<Uint8Array> =>
  typeof ReadableStream !== "undefined" && u instanceof ReadableStream

const proxied = () =>
  ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"].some((name) => (process.env[name] ?? "") !== "")

const abortReason = (signal: AbortSignal): unknown =>
  signal.reason ?? new DOMException("This operation was aborted", "AbortError")

/** response headers as the web `Headers` (repeated ones appended) */
const headersOf = (res: http.IncomingMessage): Headers => {
  const headers = new Headers()
  for (let i = 0; i < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!)
  return headers
}

/** the response body, decoded as the global `fetch` decodes it */
const bodyOf = (res: http.IncomingMessage, headers: Headers): Readable => {
  const encoding = (headers.get("content-encoding") ?? "").trim().toLowerCase()
  const decoder = encoding === "gzip" || encoding === "x-gzip"
    ? zlib.createGunzip()
    : encoding === "deflate"
    ? zlib.createInflate()
    : encoding === "br"
    ? zlib.createBrotliDecompress()
    : undefined
  if (decoder === undefined) return res
  headers.delete("content-encoding")
  headers.delete("content-length")
  res.on("error", (e) => decoder.destroy(e))
  return res.pipe(decoder)
}

/**
 * `fetch`, with a streamed request body sent with backpressure (see the module's description).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fetch: typeof globalThis.fetch = (input, init) => {
  const body = init?.body
  const streamed = isReadableStream(body) || isAsyncIterable(body)
  if (!streamed || input instanceof Request || proxied()) return globalThis.fetch(input, init)
  const url = new URL(String(input))
  if (url.protocol !== "http:" && url.protocol !== "https:") return globalThis.fetch(input, init)
  const signal = init?.signal ?? undefined
  return new Promise<Response>((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal))
    const headers: Record<string, string> = {}
    new Headers(init?.headers).forEach((value, name) => {
      headers[name] = value
    })
    let answered = false
    const source = isReadableStream(body)
      ? Readable.fromWeb(body as unknown as NodeReadableStream<Uint8Array>)
      : Readable.from(body as AsyncIterable<Uint8Array | string>, { objectMode: false })
    const req = (url.protocol === "https:" ? https : http).request(url, { method: init?.method ?? "POST", headers })
    const onAbort = () => {
      const reason = abortReason(signal!)
      source.destroy()
      req.destroy(reason instanceof Error ? reason : new Error(String(reason)))
      if (!answered) reject(reason)
    }
    signal?.addEventListener("abort", onAbort, { once: true })
    const fail = (e: unknown) => {
      signal?.removeEventListener("abort", onAbort)
      source.destroy()
      if (!answered) reject(new TypeError("fetch failed", { cause: e }))
    }
    req.on("error", fail)
    source.on("error", (e) => {
      req.destroy(e)
      fail(e)
    })
    req.on("response", (res) => {
      answered = true
      const resHeaders = headersOf(res)
      const status = res.statusCode ?? 0
      if (NULL_BODY.has(status) || init?.method === "HEAD") {
        res.resume()
        signal?.removeEventListener("abort", onAbort)
        return resolve(new Response(null, { status, statusText: res.statusMessage ?? "", headers: resHeaders }))
      }
      const decoded = bodyOf(res, resHeaders)
      decoded.on("close", () => signal?.removeEventListener("abort", onAbort))
      if (signal !== undefined) signal.addEventListener("abort", () => decoded.destroy(), { once: true })
      resolve(
        new Response(Readable.toWeb(decoded) as unknown as ReadableStream<Uint8Array>, {
          status,
          statusText: res.statusMessage ?? "",
          headers: resHeaders
        })
      )
    })
    // `pipe` waits for the socket to drain before it reads on: the backpressure the global fetch lacks
    source.pipe(req)
  })
}
