-- Every render request (POST /api/enhance/train, POST /api/enhance) by user, with the paid
-- provider calls it may make: the per-user rate limit and daily cap count them.
CREATE TABLE render_requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id),
    paid_calls  integer     NOT NULL CHECK (paid_calls >= 0),
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX render_requests_user_idx ON render_requests (user_id, at DESC);
