/**
 * The web view's routes: the page (`/`, `/app.js`, `/app.css`) and the read-only JSON API.
 *
 * - `GET /api/info`: the ledger the view reads
 * - `GET /api/runs`: every run, newest first
 * - `GET /api/runs/:id`: one run, with its failures by kind
 * - `GET /api/runs/:id/batches`: its batches, with their times
 * - `GET /api/runs/:id/failures/:kind?after=&limit=`: a page of the rows that ended failed with that kind (`all`)
 * - `GET /api/runs/:id/row?key=`: one row (record, request, answer)
 *
 * Only `GET` is served (anything else: 405). When the server listens on loopback, a request whose `Host` is not a
 * loopback name is refused (403): a web page elsewhere cannot read the ledger through DNS rebinding.
 *
 * @internal
 */
import { Cause, Effect, Layer } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as fs from "node:fs"
import type { Api } from "./api.ts"
import { ApiError } from "./api.ts"

/** the static files of the page, read once */
export const assets = (): ReadonlyMap<string, { readonly body: string; readonly type: string }> => {
  const read = (name: string) => fs.readFileSync(new URL(`./assets/${name}`, import.meta.url), "utf8")
  return new Map([
    ["/", { body: read("index.html"), type: "text/html; charset=utf-8" }],
    ["/app.js", { body: read("app.js"), type: "text/javascript; charset=utf-8" }],
    ["/app.css", { body: read("app.css"), type: "text/css; charset=utf-8" }]
  ])
}

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
}

const json = (body: unknown, status = 200) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { ...SECURITY_HEADERS, "cache-control": "no-store" } })

const errorJson = (status: number, message: string) => json({ error: message }, status)

/** `Host` names that reach a loopback server on purpose */
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/i

/** the handler behind the host check, with API errors and failures as JSON answers */
const endpoint = <E extends { readonly message: string }>(
  loopbackOnly: boolean,
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams | HttpRouter.RouteContext>
) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (loopbackOnly && !LOOPBACK.test(request.headers["host"] ?? "")) {
      return errorJson(403, `host "${request.headers["host"] ?? ""}" is not served: open the page through 127.0.0.1 or localhost`)
    }
    return yield* handler
  }).pipe(
    Effect.catch((e: E | ApiError) => Effect.succeed(e instanceof ApiError ? errorJson(e.status, e.message) : errorJson(500, e.message))),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.succeed(errorJson(500, Cause.pretty(cause).split("\n")[0]!))
    )
  )

const param = (name: string) => Effect.map(HttpRouter.params, (params) => params[name] ?? "")

const query = (name: string) =>
  Effect.map(HttpServerRequest.ParsedSearchParams, (params) => {
    const value = params[name]
    return Array.isArray(value) ? value[0] as string | undefined : value
  })

const intQuery = (name: string, min: number, max: number, fallback: number) =>
  Effect.flatMap(query(name), (raw) => {
    if (raw === undefined || raw === "") return Effect.succeed(fallback)
    const n = Number(raw)
    return Number.isInteger(n) && n >= min && n <= max
      ? Effect.succeed(n)
      : Effect.fail(new ApiError({ status: 400, message: `${name} must be an integer from ${min} to ${max}, got "${raw}"` }))
  })

/** every route of the web view over `api` */
export const layer = (api: Api, options: { readonly loopbackOnly: boolean }) => {
  const files = assets()
  const route = <E extends { readonly message: string }>(
    path: `/${string}`,
    handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams | HttpRouter.RouteContext>
  ) => HttpRouter.add("GET", path, endpoint(options.loopbackOnly, handler))
  const asset = (path: "/" | "/app.js" | "/app.css") => {
    const file = files.get(path)!
    return route(path, Effect.succeed(HttpServerResponse.text(file.body, {
      contentType: file.type,
      headers: { ...SECURITY_HEADERS, "cache-control": "no-cache" }
    })))
  }
  return Layer.mergeAll(
    asset("/"),
    asset("/app.js"),
    asset("/app.css"),
    route("/api/info", Effect.succeed(json(api.info))),
    route("/api/runs", Effect.map(api.runs, (body) => json(body))),
    route("/api/runs/:id", Effect.flatMap(param("id"), (id) => Effect.map(api.run(id), (body) => json(body)))),
    route("/api/runs/:id/batches", Effect.flatMap(param("id"), (id) => Effect.map(api.batches(id), (body) => json(body)))),
    route(
      "/api/runs/:id/failures/:kind",
      Effect.gen(function*() {
        const id = yield* param("id")
        const kind = yield* param("kind")
        const after = yield* intQuery("after", 0, Number.MAX_SAFE_INTEGER, 0)
        const limit = yield* intQuery("limit", 1, 500, 50)
        return json(yield* api.failures(id, kind, { after, limit }))
      })
    ),
    route(
      "/api/runs/:id/row",
      Effect.gen(function*() {
        const id = yield* param("id")
        const key = yield* query("key")
        if (key === undefined || key === "") return yield* new ApiError({ status: 400, message: "give the row's key: ?key=…" })
        return json(yield* api.row(id, key))
      })
    ),
    HttpRouter.add(
      "*",
      "*",
      endpoint(
        options.loopbackOnly,
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const path = request.url.split("?")[0]!
          if (request.method !== "GET" && request.method !== "HEAD") {
            return HttpServerResponse.setHeader(errorJson(405, `${request.method} ${path}: the web view is read-only (GET only)`), "allow", "GET")
          }
          return errorJson(404, `no such page: ${path}`)
        })
      )
    )
  )
}
