/**
 * `emulator`: serves a provider's local emulator and prints its base URL.
 *
 * @internal
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as path from "node:path"
import * as ProviderPlugin from "../../ProviderPlugin.ts"
import { failure, stateDirFlag } from "./shared.ts"

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
    stateDir: stateDirFlag
  },
  ({ provider, port, dir, knobs, stateDir }) =>
    Effect.gen(function*() {
      const plugin = yield* ProviderPlugin.load(provider).pipe(Effect.mapError(failure))
      const parsed = Option.isSome(knobs)
        ? yield* Effect.try({ try: () => JSON.parse(knobs.value) as Record<string, unknown>, catch: () => failure("--knobs is not JSON") })
        : undefined
      const handle = yield* plugin.serveEmulator({
        dir: Option.getOrUndefined(dir) ?? path.join(path.resolve(stateDir), "emulator", plugin.name),
        port,
        knobs: parsed
      }).pipe(Effect.mapError(failure))
      yield* Console.log(handle.url)
      return yield* Effect.never
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Serve a provider's local emulator (prints its base URL)"))
