-- Phase 2: image features of observations that arrived with their images (the images are not
-- kept; the features are what the reward model learns from). group_id is the upload both
-- options of one experiment share: their rating difference is the reward model's cleanest signal.
CREATE TABLE ml.observation_features (
    study            text        NOT NULL,
    observation_id   text        NOT NULL,
    group_id         text        NOT NULL CHECK (length(group_id) BETWEEN 1 AND 200),
    feature_version  text        NOT NULL,
    features         real[]      NOT NULL CHECK (cardinality(features) > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study, observation_id),
    FOREIGN KEY (study, observation_id)
        REFERENCES ml.observations (study, observation_id) ON DELETE CASCADE
);
CREATE INDEX observation_features_group_idx ON ml.observation_features (study, group_id);
