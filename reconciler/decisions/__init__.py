"""Pure decisions and values: what to do, given what is known. No I/O, no clock, no asyncio;
imports nothing of reconciler but itself."""
