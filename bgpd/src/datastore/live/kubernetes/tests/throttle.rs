//! 429 Too Many Requests with `Retry-After` from the API server, as API priority and fairness answers.
