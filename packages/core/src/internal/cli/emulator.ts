/**
 * `emulator`: serves a provider's local emulator and prints its base URL.
 *
 * @internal
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as path from "node:path"
import * as ProviderPlugin from "../../ProviderPlugin.ts"
import { failure, jsonFlag, stateDirFlag, usage } from "./shared.ts"

/** the `emulator` command */
export const emulatorCommand = Command.make(
  "emulator",
  {
    provider: Argument.String("provider").pipe(Argument.withDescription(`one of ${ProviderPlugin.known.join(", ")}`)),
    port: Flag.Int("port").pipe(Flag.withDescription("0 picks a free port"), Flag.withDefault(0)),
    dir: Flag.String("dir").pipe(Flag.withDescription("where the emulator keeps its state"), Flag.optional),
    knobs: Flag.String("knobs").pipe(
      Flag.withDescription("provider-specific options as JSON, e.g. '{\"lineFailures\":[{\"status\":500,\"rate\":0.05}]}'"),
      Flag.optional
    ),
    json: jsonFlag,
    stateDir: stateDirFlag
  },
  ({ provider, port, dir, knobs, json, stateDir }) =>
    Effect.gen(function*() {
      const plugin = yield* ProviderPlugin.load(provider).pipe(Effect.mapError((e) => usage(e.message)))
      const parsed = Option.isSome(knobs)
        ? yield* Effect.fromResult(ProviderPlugin.parseKnobs(knobs.value, { from: "--knobs" })).pipe(Effect.mapError(failure))
        : undefined
      const handle = yield* plugin.serveEmulator({
        dir: Option.getOrUndefined(dir) ?? path.join(path.resolve(stateDir), "emulator", plugin.name),
        port,
        knobs: parsed
      }).pipe(Effect.mapError(failure))
      yield* Console.log(json ? JSON.stringify({ provider: plugin.name, url: handle.url }) : handle.url)
      return yield* Effect.never
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Serve a provider's local emulator (prints its base URL)"))
