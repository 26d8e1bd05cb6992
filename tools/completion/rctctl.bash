# bash completion for rctctl: its commands and options, and the names of
# the disks the rctd it would talk to has (through `rctctl --json list`,
# with the same --state-dir or --socket as the line being completed).

_rctctl_disks()
{
    local -a conn=()
    local i
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case ${COMP_WORDS[i]} in
            --state-dir | --socket) conn+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;
        esac
    done
    command rctctl "${conn[@]}" --json list 2>/dev/null |
        sed -n 's/^ *"name": "\([^"]*\)".*/\1/p'
}

_rctctl()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="create list stats info delete resize import checkpoint checkpoints checkpoint-delete
        changes snapshot snapshots snapshot-delete diff restore attach detach clone jobs job job-cancel upgrade"
    case $prev in
        --state-dir | --from | --binary) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --size | --granularity | --name | --since | --until | --watch | --group) return ;;
    esac
    local i command=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --state-dir | --socket) ((i++)) ;;
            -*) ;;
            *) command=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--state-dir --socket --json --version --help" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi
    case $cur in
        -*) COMPREPLY=($(compgen -W "--help --force --json --name --size --group --watch --detach --move" -- "$cur")) ;;
        *) [[ $command == create || $command == import || $command == upgrade || $command == job* ]] ||
            COMPREPLY=($(compgen -W "$(_rctctl_disks)" -- "$cur")) ;;
    esac
}

complete -F _rctctl rctctl
