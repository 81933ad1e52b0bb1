"""`inkfuse play`: a playground in the browser. `engine` holds what does not depend on the web
library (requests, checks, the queue, the events); `server` puts it behind FastAPI and streams
the events as server-sent events to the page in `static/`."""
