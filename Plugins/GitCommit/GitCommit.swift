import PackagePlugin

/// Embeds the git commit the sources are built from as `let gitCommit = "…"` (12 hex digits,
/// `-dirty` when tracked files differ from it; `unknown` outside a git checkout or without
/// git), for `distcnn --version`. A prebuild command, so it runs on every build and sees a new
/// commit even when no source changed; the file is rewritten only when its text changes, so an
/// unchanged commit recompiles nothing.
@main
struct GitCommit: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let output = context.pluginWorkDirectory.appending("generated")
        let script = #"""
            set -u
            repo=$1 out=$2
            commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null) || commit=unknown
            if [ "$commit" != unknown ] && ! git -C "$repo" diff --quiet HEAD -- 2>/dev/null; then commit="$commit-dirty"; fi
            mkdir -p "$out" || exit 1
            text="// Written by Plugins/GitCommit at build time; not in the repository.
            let gitCommit = \"$commit\""
            if [ "$(cat "$out/GitCommit.swift" 2>/dev/null)" != "$text" ]; then
                printf '%s\n' "$text" > "$out/GitCommit.swift.tmp" && mv "$out/GitCommit.swift.tmp" "$out/GitCommit.swift" || exit 1
            fi
            """#
        return [.prebuildCommand(displayName: "Embedding the git commit in \(target.name)",
                                 executable: Path("/bin/sh"),
                                 arguments: ["-c", script, "sh", context.package.directory.string, output.string],
                                 outputFilesDirectory: output)]
    }
}
