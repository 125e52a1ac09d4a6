"""router: classifies each accepted request and dispatches it to the responsible department."""
