package api

// Doctor runs the doctor for one integration and keeps its reports.
// (Filled in with the doctor: POST /integrations/{id}/doctor.)
type Doctor interface{}

func (s *server) registerDoctor() {}
