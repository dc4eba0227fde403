# bash completion for hyphactl: commands, options, and worker names asked
# of the running hyphad (`hyphactl status --json`), with the same --socket
# or --config as the line being completed. Installed as
# /usr/share/bash-completion/completions/hyphactl.

_hyphactl_workers()
{
    local -a where=()
    local i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --socket | --config) where+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;
        --socket=* | --config=*) where+=("${COMP_WORDS[i]}") ;;
        esac
    done
    # every worker once, then `all`; nothing when hyphad does not answer
    hyphactl "${where[@]}" status --json 2>/dev/null |
        grep -o '"worker":"[^"]*"' | cut -d'"' -f4 | sort -u
    echo all
}

_hyphactl()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="status health restart stop start signal reload upgrade tail tap metrics"
    local cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --socket | --config) ((i++)) ;;
        -*) ;;
        *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    case $prev in
    --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --config) COMPREPLY=($(compgen -f -X '!*.y*ml' -o plusdirs -- "$cur")); return ;;
    esac
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands --socket --config --json --help --version" -- "$cur"))
        return
    fi
    case $cmd in
    upgrade)
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--timeout --json --help" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        ;;
    status | restart | stop | start | tail)
        if [[ $cur == -* ]]; then
            case $cmd in
            restart) COMPREPLY=($(compgen -W "--rolling --preload --timeout --json --help" -- "$cur")) ;;
            tail) COMPREPLY=($(compgen -W "-n -f --json --help" -- "$cur")) ;;
            *) COMPREPLY=($(compgen -W "--json --help" -- "$cur")) ;;
            esac
        else
            COMPREPLY=($(compgen -W "$(_hyphactl_workers)" -- "$cur"))
        fi
        ;;
    signal)
        local words=0
        for ((i = i + 1; i < COMP_CWORD; i++)); do [[ ${COMP_WORDS[i]} != -* ]] && ((words++)); done
        if ((words == 0)); then
            COMPREPLY=($(compgen -W "$(_hyphactl_workers)" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "TERM INT HUP QUIT KILL USR1 USR2 ABRT ALRM WINCH CONT STOP" -- "$cur"))
        fi
        ;;
    *) COMPREPLY=($(compgen -W "--json --help" -- "$cur")) ;;
    esac
}
complete -F _hyphactl hyphactl
