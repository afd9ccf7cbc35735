// Package bus is inthub's kit for NATS JetStream: the streams and their
// settings (one place), a Publisher that validates events and never loses
// one when the bus is down, and the Worker frame every service runs its
// handlers in, with one middleware stack and one place that decides between
// ack, delayed redelivery, dead letter and spool.
//
// The middleware order, outermost first (Watermill runs the first added
// outermost), is
//
//	trace → outcome → retry → breaker → timeout → recover → handler
//
// so the outcome layer sees an error only after the short in-process retry
// has given up, and a dead letter is never written for an error that a retry
// would have cured.
package bus
