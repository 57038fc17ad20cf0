package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/internal/atomicfile"
)

// snapshotTimeout bounds a save or a restore: a restore waits until a
// quorum of agents has installed the state.
const snapshotTimeout = 2 * time.Minute

func newSnapshotCmd(o *clientOpts) *cobra.Command {
	cmd := groupCmd("snapshot", "Save, restore and inspect backups of the cluster's state",
		newSnapshotSaveCmd(o), newSnapshotRestoreCmd(o), newSnapshotInspectCmd(o))
	cmd.Long = `Back up the whole replicated state — pools, tokens, rotations, events, ACL
policies and tokens, the keyring's choice — and restore it:

    tokend snapshot save backup.snap       # from the leader; written 0600, atomically
    tokend snapshot inspect backup.snap    # offline: header and checksum
    tokend snapshot restore backup.snap    # replaces the state of every agent

Secrets in the file are sealed with the cluster's keyring, as in the data dir:
the file holds no plaintext secret, and a cluster can restore it only if every
agent holds the keys it was sealed with. Saving and restoring need the operator
capability (over the socket: root or the agent's user).`
	return cmd
}

func newSnapshotSaveCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the cluster's state, taken on the leader, to FILE",
		Long: `Save a snapshot of the cluster's state, taken on the leader (whichever agent
is asked), to FILE: written to a temporary file next to it, mode 0600, and
renamed into place only once whole, so FILE is never left half written. The
file is checked (format and checksum) before it is written.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), snapshotTimeout)
			defer cancel()
			data, file, err := c.SnapshotSave(ctx)
			if err != nil {
				return err
			}
			if err := atomicfile.Write(args[0], data); err != nil {
				return fmt.Errorf("write the snapshot: %w", err)
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, snapshotReport(args[0], file))
			}
			fmt.Fprintf(out, "Saved snapshot of index %d (term %d) to %s: %d bytes, sha256 %s\n",
				file.Info.Index, file.Info.Term, args[0], file.Size, file.SHA256)
			fmt.Fprintf(out, "It holds %s. Its secrets are sealed with key %s: keep the keyring to restore it.\n",
				snapshotContents(file.Info), orNone(strings.Join(file.Info.KeyIDs, ", ")))
			return nil
		},
	}
}

func newSnapshotRestoreCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the state of every agent with the snapshot in FILE",
		Long: `Replace the whole state of every agent with the snapshot in FILE. The file is
checked here first (format, checksum), then by the agent and the leader: every
record, and that every agent's keyring opens every sealed value in it. If
anything is wrong nothing changes. Everything written since the snapshot was
taken is lost, ACL tokens included, and credentials issued after it are no
longer tracked; the leader resumes or abandons rotations open in the
snapshot. The restore is recorded as a snapshot_restored event.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, file, err := readSnapshotFile(args[0])
			if err != nil {
				return err
			}
			return callWait(o, cmd, snapshotTimeout, func(ctx context.Context, c *client.Client) (api.SnapshotRestored, error) {
				return c.SnapshotRestore(ctx, data)
			}, func(out io.Writer, res api.SnapshotRestored) error {
				fmt.Fprintf(out, "Restored the snapshot of index %d (term %d, saved by %s at %s) on every agent: %s.\n",
					file.Info.Index, file.Info.Term, file.Info.Node, file.Info.CreatedAt.Format(time.RFC3339), snapshotContents(file.Info))
				fmt.Fprintf(out, "The state stands at index %d; the restore is recorded at index %d.\n", res.RestoredIndex, res.Index)
				return nil
			})
		},
	}
}

func newSnapshotInspectCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show what a snapshot file holds and check its checksum, offline",
		Long: `Show a snapshot file's header — where and when it was taken, what it holds,
which keys seal its secrets — and check its format and checksum. It needs no
agent, and shows no secret.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, file, err := readSnapshotFile(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, snapshotReport(args[0], file))
			}
			info := file.Info
			tw := newTable(out)
			row(tw, "File", args[0])
			row(tw, "Format", fmt.Sprint(file.Format))
			row(tw, "Index", fmt.Sprint(info.Index))
			row(tw, "Term", fmt.Sprint(info.Term))
			row(tw, "Created", info.CreatedAt.Format(time.RFC3339))
			saved := info.Node
			if info.Leader != "" && info.Leader != info.Node {
				saved += " (from leader " + info.Leader + ")"
			}
			row(tw, "Saved by", saved)
			row(tw, "State", fmt.Sprintf("version %d, %d bytes", info.StateVersion, info.PayloadBytes))
			row(tw, "Pools", fmt.Sprint(info.Pools))
			row(tw, "Tokens", fmt.Sprint(info.Tokens))
			row(tw, "Open rotations", fmt.Sprint(info.Rotations))
			row(tw, "ACL policies", fmt.Sprint(info.ACLPolicies))
			row(tw, "ACL tokens", fmt.Sprint(info.ACLTokens))
			row(tw, "Events", fmt.Sprint(info.Events))
			row(tw, "Sealing key", orNone(info.SealingKey))
			row(tw, "Sealed with", orNone(strings.Join(info.KeyIDs, ", ")))
			row(tw, "Size", fmt.Sprintf("%d bytes", file.Size))
			row(tw, "Checksum", "sha256 "+file.SHA256+" OK")
			return tw.Flush()
		},
	}
}

// snapshotFileReport is what save and inspect print with --json.
type snapshotFileReport struct {
	File       string           `json:"file"`
	Format     int              `json:"format"`
	Info       api.SnapshotInfo `json:"info"`
	Size       int64            `json:"size"`
	SHA256     string           `json:"sha256"`
	ChecksumOK bool             `json:"checksum_ok"`
}

func snapshotReport(path string, f *api.SnapshotFile) snapshotFileReport {
	return snapshotFileReport{File: path, Format: f.Format, Info: f.Info, Size: f.Size, SHA256: f.SHA256, ChecksumOK: true}
}

func snapshotContents(info api.SnapshotInfo) string {
	return fmt.Sprintf("%d pools, %d tokens, %d ACL tokens", info.Pools, info.Tokens, info.ACLTokens)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// readSnapshotFile reads and checks a snapshot file; errors name the file.
func readSnapshotFile(path string) ([]byte, *api.SnapshotFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, api.MaxSnapshotFileBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > api.MaxSnapshotFileBytes {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes: it is not a tokend snapshot file", path, api.MaxSnapshotFileBytes)
	}
	file, err := api.DecodeSnapshot(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, file, nil
}
