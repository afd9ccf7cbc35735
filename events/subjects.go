package events

// Subjects of the events whose payloads this package defines. An event's
// type equals its NATS subject.
const (
	SubjectIntegrationCreated       = "integration.created"
	SubjectIntegrationUpdated       = "integration.updated"
	SubjectIntegrationDeleted       = "integration.deleted"
	SubjectIntegrationHealthChecked = "integration.health_checked"
	SubjectIntegrationHealthChanged = "integration.health_changed"
	SubjectAnnotationRequested      = "scm.annotation.requested"
	SubjectAnnotationCompleted      = "scm.annotation.completed"
	SubjectAnnotationFailed         = "scm.annotation.failed"
	SubjectPluginRegistered         = "plugin.registered"
	SubjectPluginUnregistered       = "plugin.unregistered"
)

// Subjects lists the subjects above, each of which has a payload schema, in
// the order of their lifecycle. The slice is new on each call.
func Subjects() []string {
	return []string{
		SubjectIntegrationCreated,
		SubjectIntegrationUpdated,
		SubjectIntegrationDeleted,
		SubjectIntegrationHealthChecked,
		SubjectIntegrationHealthChanged,
		SubjectAnnotationRequested,
		SubjectAnnotationCompleted,
		SubjectAnnotationFailed,
		SubjectPluginRegistered,
		SubjectPluginUnregistered,
	}
}
