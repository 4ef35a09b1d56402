"""ComfyUI node classes: thin adapters over adastate_core (the node pack arrives with the
streaming engine; this registry is what ComfyUI reads)."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
