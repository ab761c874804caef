"""Long-term memory: what an agent remembers about a Slack user across conversations.

After each turn the engine hands the exchange to `MemoryProvider.add` (when the agent has
memory on) for that user and agent; before the next turn it `search`es for memories that
bear on the new message and puts them in the system prompt. Admin surfaces `list`,
`delete` and `clear` them.

* `port` — the `MemoryProvider` Protocol and its value types. Sync on purpose; async
  callers run it in a worker thread. Every call is scoped by tenant.
* `local` — `LocalMemory`, the embedded default: the `memories` table plus exact in-process
  search (MiniLM cosine blended with IDF word overlap; word overlap alone when hashing).
* `mem0_provider` — `Mem0Memory` over mem0's OSS `Memory` or hosted `MemoryClient`
  (`build_mem0`); mem0 itself is imported only when this provider is built.
* `exchange` — what is stored from a turn when no LLM distils it; `lexical` — the word
  matching half of the local ranking.
"""

from core.memory.local import LocalMemory
from core.memory.mem0_provider import Mem0Memory, build_mem0
from core.memory.port import MemoryMessage, MemoryProvider, MemoryRecord

__all__ = [
    "LocalMemory",
    "Mem0Memory",
    "MemoryMessage",
    "MemoryProvider",
    "MemoryRecord",
    "build_mem0",
]
