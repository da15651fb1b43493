"""Bounds that keep compiling an untrusted file from exhausting the machine."""

MAX_SOURCE_BYTES = 4 * 1024 * 1024      # one .kd file
MAX_UNROLLED_STATEMENTS = 200_000        # statements executed while elaborating (loops unrolled)
MAX_REPEAT = 100_000                     # one `repeat N`
MAX_CALL_DEPTH = 64                      # nested block / model calls (recursion)
MAX_NODES = 100_000                      # IR nodes in one model
MAX_DIM = 2 ** 31 - 1                    # one tensor dimension
MAX_WEIGHT_ELEMENTS = 2 ** 28            # one weight tensor (1 GiB of float32)
MAX_MODEL_PARAMETERS = 2 ** 29           # all weights of a model (2 GiB of float32)
MAX_IMPORTS = 256                        # files reached through imports
