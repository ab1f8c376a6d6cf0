/**
 * The web view's HTTP server (effect's own, on Node's `http`): the page and the JSON API over a ledger, until the
 * scope closes. Closing drops every open connection (a page's keep-alive socket), so Ctrl-C ends at once.
 *
 * @internal
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { createServer } from "node:http"
import type * as Ledger from "../../Ledger.ts"
import * as Api from "./api.ts"
import * as Render from "./render.ts"
import * as Routes from "./routes.ts"

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** true for an address only this machine reaches */
export const isLoopback = (host: string) => /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/i.test(host)

/** where the server listens and what it shows */
export interface Options {
  /** default 127.0.0.1 */
  readonly host?: string | undefined
  /** 0 (default) picks a free port */
  readonly port?: number | undefined
  /** the ledger's name shown on the page (a file path, or `Postgres`) */
  readonly label?: string | undefined
  /** the flags a command needs to reach this ledger, for the page's `offpeak resume …` hints */
  readonly ledgerFlags?: string | undefined
  /** render each inspected row's request with the run's pipeline module (default true) */
  readonly render?: boolean | undefined
}

/**
 * Serves the web view of `ledger` until the scope closes; the page's URL (`http://127.0.0.1:41234/`).
 */
export const serve = (ledger: Ledger.Service, options: Options = {}): Effect.Effect<string, string, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const api = Api.make(ledger, { label: options.label, ledgerFlags: options.ledgerFlags, render: options.render === false ? undefined : Render.make() })
    const routes = yield* Effect.try({
      try: () => Routes.layer(api, { loopbackOnly: isLoopback(host) }),
      catch: (cause) => `cannot read the page's files: ${message(cause)}`
    })
    const node = createServer()
    const server = HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(
        NodeHttpServer.layer(() => node, { port: options.port ?? 0, host, gracefulShutdownTimeout: "100 millis" })
      )
    )
    const context = yield* Layer.build(server).pipe(
      Effect.mapError((cause) => `cannot listen on ${host}:${options.port ?? 0}: ${message(cause)}`)
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => node.closeAllConnections()))
    const url = new URL(HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address))
    if (url.hostname === "0.0.0.0" || url.hostname === "[::]") url.hostname = "127.0.0.1"
    return `${url.origin}/`
  })
