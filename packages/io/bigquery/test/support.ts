/**
 * Test helpers: a BigQuery emulator for the duration of a test, and the
 * official client pointed at it.
 */
import { BigQuery } from "@google-cloud/bigquery"
import { Effect } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Emulator from "../Emulator.ts"

export const PROJECT = "test-proj"

export const tmp = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-bq-test-${prefix}-`))

/** the official client against an emulator (no credentials) */
export const clientOf = (url: string, project = PROJECT) =>
  new BigQuery({ projectId: project, apiEndpoint: url, authClient: new PassThroughClient() })

/** runs `f` against a fresh emulator, closed afterwards */
export const withEmulator = <A>(
  options: Emulator.Options,
  f: (bq: BigQuery, emulator: Emulator.Handle) => Promise<A>
): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(Effect.flatMap(Emulator.serve(options), (emulator) => Effect.promise(() => f(clientOf(emulator.url), emulator))))
  )

/** runs an Effect program with an emulator in scope */
export const withEmulatorEffect = <A, E>(
  options: Emulator.Options,
  f: (emulator: Emulator.Handle, bq: BigQuery) => Effect.Effect<A, E>
): Promise<A> =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(Emulator.serve(options), (emulator) => f(emulator, clientOf(emulator.url)))) as Effect.Effect<A, never>)
