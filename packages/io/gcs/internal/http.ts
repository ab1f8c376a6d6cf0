/**
 * What the Google emulators (Cloud Storage, BigQuery) share: an HTTP server on
 * loopback dispatching every request to one handler, Google's JSON error
 * shape, request bodies, `multipart/related` bodies, a state folder, and the
 * path prefixes the official clients use (with and without `/storage/v1` or
 * `/bigquery/v2`).
 *
 * @internal
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Cause, Context, Data, Effect, Layer, Stream } from "effect"
import type { Scope } from "effect"
import { HttpPlatform, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as os from "node:os"
import * as path from "node:path"

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

// ===== errors =====

/** the `status` text Google's APIs put next to an HTTP status */
const STATUS_TEXT: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  409: "ALREADY_EXISTS",
  412: "FAILED_PRECONDITION",
  413: "INVALID_ARGUMENT",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  501: "UNIMPLEMENTED",
  502: "UNAVAILABLE",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED"
}

/** an error answered in Google's JSON shape: `{ error: { code, message, errors: [{ message, domain, reason }], status } }` */
export class GoogleError extends Data.TaggedError("GoogleError")<{
  readonly status: number
  readonly message: string
  /** `notFound`, `duplicate`, `invalid`, `invalidQuery`, `conditionNotMet`, `rateLimitExceeded`, `backendError`, … */
  readonly reason: string
  readonly location?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
}> {}

export const badRequest = (text: string, reason = "invalid", location?: string) =>
  new GoogleError({ status: 400, message: text, reason, location })

export const notFound = (text: string) => new GoogleError({ status: 404, message: text, reason: "notFound" })

export const errorBody = (e: { readonly status: number; readonly message: string; readonly reason: string; readonly location?: string | undefined }) => ({
  error: {
    code: e.status,
    message: e.message,
    errors: [{ message: e.message, domain: "global", reason: e.reason, ...(e.location === undefined ? {} : { location: e.location, locationType: "other" }) }],
    status: STATUS_TEXT[e.status] ?? (e.status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT")
  }
})

export const json = (body: unknown, status = 200, headers: Readonly<Record<string, string>> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers })

export const errorResponse = (e: GoogleError) => json(errorBody(e), e.status, e.headers ?? {})

// ===== requests =====

/** a request as the handlers see it: method, the path without its query, the decoded query, headers */
export interface Request {
  readonly method: string
  /** the raw path (still percent-encoded), without the query */
  readonly path: string
  readonly query: URLSearchParams
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly raw: HttpServerRequest.HttpServerRequest
}

/** the whole body, refused past `max` bytes */
export const readBody = (request: Request, max: number): Effect.Effect<Buffer, GoogleError> =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    let size = 0
    yield* Stream.runForEach(request.raw.stream, (chunk) =>
      Effect.suspend(() => {
        size += chunk.length
        if (size > max) return Effect.fail(new GoogleError({ status: 413, message: `The request body is larger than ${max} bytes.`, reason: "invalid" }))
        chunks.push(chunk)
        return Effect.void
      })).pipe(
        Effect.mapError((e) => e instanceof GoogleError ? e : badRequest(`Could not read the request body: ${message(e)}`))
      )
    return Buffer.concat(chunks)
  })

/** the body parsed as JSON (an empty body is `{}`) */
export const readJson = (request: Request, max = 64 * 1024 * 1024): Effect.Effect<unknown, GoogleError> =>
  Effect.flatMap(readBody(request, max), (body) => {
    const text = body.toString("utf8").trim()
    if (text.length === 0) return Effect.succeed({})
    try {
      return Effect.succeed(JSON.parse(text) as unknown)
    } catch (cause) {
      return Effect.fail(badRequest(`Invalid JSON payload received. ${message(cause)}`, "parseError"))
    }
  })

/** one part of a `multipart/related` body */
export interface Part {
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer
}

/** splits a `multipart/related` (or `multipart/form-data`) body on its boundary */
export const parseMultipart = (contentType: string, body: Buffer): ReadonlyArray<Part> | string => {
  const match = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType)
  const boundary = match?.[1] ?? match?.[2]
  if (boundary === undefined) return "the multipart body has no boundary in its Content-Type"
  const delimiter = Buffer.from(`--${boundary}`)
  const parts: Array<Part> = []
  let at = body.indexOf(delimiter)
  if (at < 0) return "the multipart body does not contain its boundary"
  while (true) {
    let start = at + delimiter.length
    if (body[start] === 45 && body[start + 1] === 45) break // `--boundary--`
    if (body[start] === 13) start++
    if (body[start] === 10) start++
    const next = body.indexOf(delimiter, start)
    if (next < 0) return "the multipart body is not terminated"
    let end = next
    if (body[end - 1] === 10) end--
    if (body[end - 1] === 13) end--
    const chunk = body.subarray(start, end)
    const headerEnd = chunk.indexOf("\r\n\r\n")
    const sepLength = headerEnd >= 0 ? 4 : 2
    const split = headerEnd >= 0 ? headerEnd : chunk.indexOf("\n\n")
    const headers: Record<string, string> = {}
    const headerText = split >= 0 ? chunk.subarray(0, split).toString("utf8") : ""
    for (const line of headerText.split(/\r?\n/)) {
      const colon = line.indexOf(":")
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    parts.push({ headers, body: split >= 0 ? chunk.subarray(split + sepLength) : chunk })
    at = next
  }
  return parts
}

/**
 * The API path of a request, without the prefix the client put in front of
 * it: `/storage/v1/b/x` and `/b/x` are both `/b/x` (an `apiEndpoint` client
 * sends the prefix, `STORAGE_EMULATOR_HOST` / `BIGQUERY_EMULATOR_HOST` do not).
 * Upload paths keep their meaning with an `upload` flag.
 */
export const apiPath = (rawPath: string, prefix: string): { readonly path: string; readonly upload: boolean } => {
  if (rawPath.startsWith(`/upload${prefix}/`)) return { path: rawPath.slice(`/upload${prefix}`.length), upload: true }
  if (rawPath.startsWith(`${prefix}/`)) return { path: rawPath.slice(prefix.length), upload: false }
  return { path: rawPath, upload: false }
}

// ===== serving =====

/**
 * Serves `handle` for every request on `host:port` until the scope closes;
 * the origin it listens on. A `GoogleError` becomes Google's JSON error; a
 * defect a 500 in the same shape. Closing drops every connection still open.
 */
export const listen = (
  handle: (request: Request) => Effect.Effect<HttpServerResponse.HttpServerResponse, GoogleError, HttpPlatform.HttpPlatform>,
  options: { readonly port?: number | undefined; readonly host?: string | undefined }
): Effect.Effect<string, string, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const node = createServer()
    const route = HttpRouter.add("*", "*", (raw: HttpServerRequest.HttpServerRequest) => {
      const url = new URL(raw.url, "http://emulator")
      const request: Request = {
        method: raw.method.toUpperCase(),
        path: raw.url.split("?")[0]!,
        query: url.searchParams,
        headers: raw.headers as Readonly<Record<string, string | undefined>>,
        raw
      }
      return handle(request).pipe(
        Effect.catchTag("GoogleError", (e) => Effect.succeed(errorResponse(e))),
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.failCause(cause)
            : Effect.succeed(errorResponse(
              new GoogleError({ status: 500, message: `The emulator failed: ${Cause.pretty(cause).split("\n")[0]}`, reason: "backendError" })
            ))
        )
      )
    })
    const server = HttpRouter.serve(route, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(() => node, { port: options.port ?? 0, host, gracefulShutdownTimeout: "100 millis" }))
    )
    const context = yield* Layer.build(server).pipe(
      Effect.mapError((cause) => `cannot start the emulator on ${host}:${options.port ?? 0}: ${message(cause)}`)
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => node.closeAllConnections()))
    return yield* Effect.try({
      try: () => {
        const url = new URL(HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address))
        if (url.hostname === "0.0.0.0" || url.hostname === "[::]") url.hostname = "127.0.0.1"
        return url.origin
      },
      catch: (cause) => `cannot tell the emulator's address: ${message(cause)}`
    })
  })

/** `dir` (created), or a fresh temp folder (named after `prefix`) removed when the scope closes; fails with a message */
export const stateFolder = (dir: string | undefined, prefix: string): Effect.Effect<string, string, Scope.Scope> =>
  dir !== undefined
    ? Effect.try({
      try: () => {
        const resolved = path.resolve(dir)
        fs.mkdirSync(resolved, { recursive: true })
        return resolved
      },
      catch: (cause) => `cannot create the emulator folder ${dir}: ${message(cause)}`
    })
    : Effect.acquireRelease(
      Effect.try({
        try: () => fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`)),
        catch: (cause) => `cannot create a temp folder: ${message(cause)}`
      }),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )

/** writes a file atomically: a temp file beside it, fsynced, then renamed over it */
export const writeAtomic = (file: string, data: string | Uint8Array) => {
  const temp = `${file}.${crypto.randomBytes(6).toString("hex")}.tmp`
  const fd = fs.openSync(temp, "w")
  try {
    fs.writeSync(fd, typeof data === "string" ? Buffer.from(data) : data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(temp, file)
}

/** a random id of `n` hex characters */
export const randomHex = (n: number) => crypto.randomBytes(Math.ceil(n / 2)).toString("hex").slice(0, n)
