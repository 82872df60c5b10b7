"""The in-process flow again, against a running ``quarry serve`` over RPC.

``app.connect(url=...)`` gives the same typed client as ``app.connect()``: every call below
travels to the server's ``/rpc`` endpoint, which wants an API key or the service token. Start a
server that logs every prediction's inputs (for the drift check), then run this file:

    QUARRY_SERVICE_TOKEN=s3cret QUARRY_PREDICTION_LOG_SAMPLE=1.0 quarry serve --port 8000
    python examples/remote.py --url http://127.0.0.1:8000 --api-key s3cret
"""

from __future__ import annotations

import argparse
import asyncio

from in_process import run  # the sibling example: python puts this folder on sys.path

import app
from contracts.training import ListTrainers


async def main(url: str, api_key: str | None) -> None:
    async with app.connect(url=url, api_key=api_key) as q:
        print(f"connected to {url}: modules {', '.join(q.modules)}")
        trainers = await q.training.list_trainers(ListTrainers())
        print(f"trainers on the server: {', '.join(t.name for t in trainers.items)}")
        await run(q)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--api-key", help="an API key or the service token")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.api_key))
