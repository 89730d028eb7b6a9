-- Active learning (phase 2): every candidate rendered for an experiment, the reward model's
-- prediction for it, and which option it became when shown (A/B); the rest were not shown.
CREATE TABLE experiment_candidates (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id     text        NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    api               text        NOT NULL,
    parameters        jsonb       NOT NULL,
    suggestion_id     text,
    predicted_rating  double precision,
    uncertainty       double precision,
    shown_as          text        CHECK (shown_as IN ('A', 'B')),
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (experiment_id, shown_as)
);
CREATE INDEX experiment_candidates_experiment_idx ON experiment_candidates (experiment_id);
