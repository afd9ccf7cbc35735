package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// writeRawJSON prints a JSON answer of the API as it came, indented.
func writeRawJSON(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("the API's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func writeIntegrationTable(w io.Writer, its []integrationView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tSTATUS\tHEALTH\tVERSION\tUPDATED")
	for _, it := range its {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", cell(it.ID), cell(oneLine(it.Name)), cell(it.Type),
			cell(it.Status), cell(it.HealthStatus), it.Version, cellTime(it.UpdatedAt))
	}
	return tw.Flush()
}

func writeIntegrationDetail(w io.Writer, it integrationView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", it.ID)
	row("Name", oneLine(it.Name))
	row("Type", it.Type)
	row("Tenant", cell(it.TenantID))
	row("Status", cell(it.Status))
	row("Health", cell(it.HealthStatus))
	last := "-"
	if it.LastHealthCheck != nil {
		last = cellTime(*it.LastHealthCheck)
	}
	row("Last health check", last)
	row("Auth ref", cell(it.AuthRef))
	row("Version", strconv.FormatInt(it.Version, 10))
	row("Created", cellTime(it.CreatedAt)+byWhom(it.CreatedBy))
	row("Updated", cellTime(it.UpdatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nConfig:")
	var buf bytes.Buffer
	if len(it.Config) == 0 || json.Indent(&buf, it.Config, "  ", "  ") != nil {
		buf.Reset()
		buf.WriteString("{}")
	}
	_, err := fmt.Fprintf(w, "  %s\n", buf.Bytes())
	return err
}

func byWhom(who string) string {
	if who == "" {
		return ""
	}
	return " by " + oneLine(who)
}

func writeTypeTable(w io.Writer, ts []typeView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPROVIDER\tBUILTIN\tCAPABILITIES")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\n", cell(t.ID), cell(oneLine(t.DisplayName)), cell(t.Provider),
			t.Builtin, cell(strings.Join(t.Capabilities, ",")))
	}
	return tw.Flush()
}

func writeTypeDetail(w io.Writer, t typeView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", t.ID)
	row("Name", cell(oneLine(t.DisplayName)))
	row("Provider", cell(t.Provider))
	row("Builtin", strconv.FormatBool(t.Builtin))
	row("Capabilities", cell(strings.Join(t.Capabilities, ", ")))
	row("Description", cell(oneLine(t.Description)))
	if err := tw.Flush(); err != nil {
		return err
	}
	fields := configFields(t.ConfigSchema)
	if len(fields) == 0 {
		_, err := fmt.Fprintln(w, "\nConfig fields: none")
		return err
	}
	fmt.Fprintln(w, "\nConfig fields (SECRET: an AuthRef URI, never the value):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  FIELD\tTYPE\tREQUIRED\tSECRET\tDEFAULT\tDESCRIPTION")
	for _, f := range fields {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", f.name, cell(f.typ), yes(f.required), yes(f.secret), cell(f.def), truncate(f.description, errorWidth))
	}
	return tw.Flush()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

type configField struct {
	name, typ, def, description string
	required, secret            bool
}

// schemaProp is the part of a JSON Schema property the field table shows.
type schemaProp struct {
	Ref         string          `json:"$ref"`
	Type        json.RawMessage `json:"type"`
	Default     json.RawMessage `json:"default"`
	Description string          `json:"description"`
	Secret      bool            `json:"x-secret"`
}

// configFields lists the top-level properties of a config schema, by name,
// following a local $ref ("#/$defs/x") once. A schema it cannot read gives
// no fields; -o json shows the schema itself.
func configFields(schema json.RawMessage) []configField {
	var s struct {
		Properties map[string]schemaProp `json:"properties"`
		Required   []string              `json:"required"`
		Defs       map[string]schemaProp `json:"$defs"`
		Defs7      map[string]schemaProp `json:"definitions"`
	}
	if json.Unmarshal(schema, &s) != nil {
		return nil
	}
	var out []configField
	for name, p := range s.Properties {
		if ref, ok := strings.CutPrefix(p.Ref, "#/$defs/"); ok {
			if d, ok := s.Defs[ref]; ok {
				p = mergeProp(p, d)
			}
		} else if ref, ok := strings.CutPrefix(p.Ref, "#/definitions/"); ok {
			if d, ok := s.Defs7[ref]; ok {
				p = mergeProp(p, d)
			}
		}
		f := configField{name: name, description: p.Description, secret: p.Secret, required: slices.Contains(s.Required, name)}
		var one string
		var many []string
		switch {
		case json.Unmarshal(p.Type, &one) == nil:
			f.typ = one
		case json.Unmarshal(p.Type, &many) == nil:
			f.typ = strings.Join(many, "|")
		}
		if len(p.Default) > 0 {
			f.def = truncate(string(p.Default), 30)
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b configField) int { return strings.Compare(a.name, b.name) })
	return out
}

// mergeProp fills what the referring property leaves empty from the
// definition it refers to.
func mergeProp(p, d schemaProp) schemaProp {
	if len(p.Type) == 0 {
		p.Type = d.Type
	}
	if len(p.Default) == 0 {
		p.Default = d.Default
	}
	if p.Description == "" {
		p.Description = d.Description
	}
	p.Secret = p.Secret || d.Secret
	return p
}
