-- What the optimizer knows: every acknowledged observation, and every suggestion it computed
-- (precomputed ones have issued_at NULL until a request takes them). Both are per study.

CREATE TABLE ml.observations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study           text        NOT NULL REFERENCES ml.studies (name) ON DELETE CASCADE,
    observation_id  text        NOT NULL CHECK (length(observation_id) BETWEEN 1 AND 200),
    suggestion_id   text,
    api             text        NOT NULL,
    parameters      jsonb       NOT NULL,
    rating          smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    prompt_version  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (study, observation_id)
);
CREATE INDEX observations_study_api_idx ON ml.observations (study, api, id);

CREATE TABLE ml.suggestions (
    id              text        PRIMARY KEY,
    study           text        NOT NULL REFERENCES ml.studies (name) ON DELETE CASCADE,
    api             text        NOT NULL,
    parameters      jsonb       NOT NULL,
    strategy        text        NOT NULL CHECK (strategy IN ('sobol', 'gp', 'explore')),
    -- the data it was computed for: the number of observations of (study, api) at the time
    n_observations  integer     NOT NULL CHECK (n_observations >= 0),
    sequence_index  integer     NOT NULL CHECK (sequence_index >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    issued_at       timestamptz,
    observed_at     timestamptz
);
CREATE INDEX suggestions_ready_idx ON ml.suggestions (study, api, n_observations)
    WHERE issued_at IS NULL;
CREATE INDEX suggestions_pending_idx ON ml.suggestions (study, api, issued_at)
    WHERE issued_at IS NOT NULL AND observed_at IS NULL;
