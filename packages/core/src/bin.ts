#!/usr/bin/env -S node --max-semi-space-size=8
/**
 * The `offpeak` executable. It runs with a young generation of 8 MB
 * (`--max-semi-space-size=8`): a run allocates quickly and keeps little, and a
 * small young generation keeps the resident size near the live heap.
 *
 * @since 0.1.0
 */
import * as Cli from "./Cli.ts"

Cli.main()
