-- Context crops (#13): the export around a flagged field, as the agent sent it (schema v2
-- records), and the field's box in it ([x, y, width, height] in the PNG's pixels), so the
-- review station shows where the value sits and what is around it.
ALTER TABLE review_queue
    ADD COLUMN context_png bytea,
    ADD COLUMN context_box integer[];
