// Package pluginpb is the generated gRPC code of connector.proto, the wire
// contract between the host and a connector plugin. Regenerate with
// protoc, protoc-gen-go and protoc-gen-go-grpc on PATH:
//
//	go generate ./pkg/plugin/internal/pluginpb
package pluginpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative connector.proto
