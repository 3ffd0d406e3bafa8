DROP TABLE delivery_events;
DROP TABLE sends;
