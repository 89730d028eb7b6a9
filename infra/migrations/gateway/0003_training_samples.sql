-- Samples are numbered by one counter row: its row lock hands out 1, 2, 3 ... exactly once
-- each, in the rating transaction, however many gateways rate at once.
CREATE TABLE training_counters (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    samples  integer NOT NULL DEFAULT 0 CHECK (samples >= 0)
);
INSERT INTO training_counters (id, samples) VALUES (true, 0);

-- The answer given to the first rating of an experiment, replayed to identical resubmissions.
ALTER TABLE experiments ADD COLUMN rate_response jsonb;
ALTER TABLE experiments ADD COLUMN rated_by bigint REFERENCES users (id);

-- Every 10th sample opens one prompt-evolution round; the primary key makes it exactly once.
CREATE TABLE evolution_rounds (
    sample_number  integer     PRIMARY KEY CHECK (sample_number > 0 AND sample_number % 10 = 0),
    experiment_id  text        NOT NULL UNIQUE REFERENCES experiments (id),
    status         text        NOT NULL DEFAULT 'triggered'
                   CHECK (status IN ('triggered', 'waiting_for_ab_test', 'running', 'done',
                                     'failed')),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The hand-written queue of 0001 is replaced by pgqueuer (0002); it never held jobs.
DROP TABLE jobs;
