/**
 * What every emulator does to start: a state folder, and an HTTP server on
 * loopback that lets go of every connection when its scope closes.
 *
 * @internal
 */
import * as Tokens from "@offpeak/core/Tokens"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { HttpServer } from "effect/http"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as os from "node:os"
import * as path from "node:path"

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** `dir`, or a fresh temp folder (named after `prefix`) removed when the scope closes; fails with a message */
export const stateFolder = (dir: string | undefined, prefix: string): Effect.Effect<string, string, Scope.Scope> =>
  dir !== undefined
    ? Effect.succeed(path.resolve(dir))
    : Effect.acquireRelease(
      Effect.try({
        try: () => fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`)),
        catch: (cause) => `cannot create a temp folder: ${message(cause)}`
      }),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )

/**
 * Serves `app` (`HttpRouter.serve(routes, …)`) on `host:port` until the scope closes; the origin it
 * listens on (`http://127.0.0.1:41234`). Closing drops every connection still
 * open (an SDK's keep-alive socket, a request in flight), so the close ends at
 * once and no socket outlives the scope.
 */
export const listen = <E>(
  app: Layer.Layer<never, E, HttpServer.HttpServer>,
  options: { readonly port?: number | undefined; readonly host?: string | undefined }
): Effect.Effect<string, string, Scope.Scope> =>
  Effect.gen(function*() {
    // the engine counts tokens as the providers do: its tokenizer loads before the first request, not during it
    // (a process that only imports an adapter never loads it)
    yield* Effect.sync(() => Tokens.preload())
    const host = options.host ?? "127.0.0.1"
    const node = createServer()
    const server = app.pipe(
      Layer.provideMerge(
        NodeHttpServer.layer(() => node, { port: options.port ?? 0, host, gracefulShutdownTimeout: "100 millis" })
      )
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
