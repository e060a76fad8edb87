/*
 * main.c: the `dqbart` launcher. It embeds LuaJIT, points package.path at
 * the Lua sources (the build tree's, or the installed ones relative to this
 * executable), tells the bindings where libdqbart.so is, registers line
 * editing for the REPL, and hands the command line to lib/dqbart/cli/main.lua,
 * which does everything else (scripts, -e, subcommands, the REPL).
 */
#include "dqbart.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Ctrl-C --------------------------------------------------------------
 * In "error" mode (the default) Ctrl-C raises a Lua error at the next hook,
 * as the stock lua interpreter does. In "flag" mode it only sets a flag that
 * a long-running loop (the trainer) polls, so it can save and exit cleanly. */
static lua_State *main_state;
/* The signal that asked to stop (SIGINT, or SIGTERM while a training loop
 * runs), 0 when none has arrived since the last look. */
static volatile sig_atomic_t interrupt_signal;
static volatile sig_atomic_t interrupt_raises = 1;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_interrupt(int sig) {
  interrupt_signal = sig;
  if (interrupt_raises && main_state)
    lua_sethook(main_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* "error": Ctrl-C raises a Lua error at once (the REPL, commands).
 * "flag": a training loop polls interrupted() between updates and saves a
 * checkpoint; SIGTERM (a scheduler preempting the job) is caught the same
 * way then, and kills as usual otherwise. */
static int l_interrupt_mode(lua_State *L) {
  const char *mode = luaL_checkstring(L, 1);
  if (strcmp(mode, "error") == 0) {
    interrupt_raises = 1;
    signal(SIGTERM, SIG_DFL);
  } else if (strcmp(mode, "flag") == 0) {
    interrupt_raises = 0;
    signal(SIGTERM, on_interrupt);
  } else {
    return luaL_error(L, "interrupt_mode: expected 'error' or 'flag', got '%s'", mode);
  }
  return 0;
}

/* interrupted() -> false, or true and the signal's name ("SIGINT",
 * "SIGTERM"); either way the record is cleared. */
static int l_interrupted(lua_State *L) {
  int sig = interrupt_signal;
  interrupt_signal = 0;
  lua_pushboolean(L, sig != 0);
  if (!sig) return 1;
  lua_pushstring(L, sig == SIGTERM ? "SIGTERM" : "SIGINT");
  return 2;
}

/* ---- line editing ---------------------------------------------------------- */

static int l_readline(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "> ");
  interrupt_raises = 0; /* readline handles Ctrl-C itself while editing */
  char *line = readline(prompt);
  interrupt_raises = 1;
  interrupt_signal = 0;
  if (!line) return 0;
  lua_pushstring(L, line);
  free(line);
  return 1;
}

static int l_add_history(lua_State *L) {
  add_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_load_history(lua_State *L) {
  read_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_save_history(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int keep = (int)luaL_optinteger(L, 2, 1000);
  int rc = write_history(path);
  if (rc == 0) history_truncate_file(path, keep);
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
  return 1;
}

static int open_launcher_module(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"readline", l_readline},         {"add_history", l_add_history}, {"load_history", l_load_history},
      {"save_history", l_save_history}, {"isatty", l_isatty},           {"interrupt_mode", l_interrupt_mode},
      {"interrupted", l_interrupted},   {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}

/* ---- paths ------------------------------------------------------------------- */

static int exe_directory(char *dir, size_t cap) {
  ssize_t n = readlink("/proc/self/exe", dir, cap - 1);
  if (n <= 0) return -1;
  dir[n] = '\0';
  char *slash = strrchr(dir, '/');
  if (!slash) return -1;
  *slash = '\0';
  return 0;
}

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* Prepend root/?.lua and root/?/init.lua to package.path for each root.
 * Roots come from dqbart-build-tree.lua beside the executable (build tree)
 * or are <exe>/../share/dqbart/lua (installed). */
static int set_package_path(lua_State *L, const char *exe_dir) {
  char buf[PATH_MAX + 64];
  snprintf(buf, sizeof buf, "%s/dqbart-build-tree.lua", exe_dir);
  if (file_exists(buf)) {
    if (luaL_dofile(L, buf)) return -1;
  } else {
    lua_newtable(L);
    snprintf(buf, sizeof buf, "%s/../share/dqbart/lua", exe_dir);
    lua_pushstring(L, buf);
    lua_rawseti(L, -2, 1);
  }
  int roots = lua_gettop(L);
  if (!lua_istable(L, roots)) {
    lua_pushfstring(L, "%s must return a table of directories", buf);
    return -1;
  }
  /* Build "r1/?.lua;r1/?/init.lua;...;" + the default path on the stack. */
  int pieces = 0;
  for (int i = 1;; i++) {
    lua_rawgeti(L, roots, i);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      break;
    }
    const char *root = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", root, root);
    lua_remove(L, -2);
    pieces++;
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_remove(L, -2);
  lua_concat(L, pieces + 1);
  lua_getglobal(L, "package");
  lua_insert(L, -2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 2); /* package, roots */
  return 0;
}

/* The bindings ffi.load() the library this launcher itself is linked to. */
static void set_library_path(lua_State *L) {
  Dl_info info;
  if (dladdr((void *)dq_version, &info) && info.dli_fname) {
    lua_pushstring(L, info.dli_fname);
    lua_setglobal(L, "DQBART_LIBRARY");
  }
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = "(error object is not a string)";
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_pushstring(L, msg);
  lua_pushinteger(L, 2);
  lua_call(L, 2, 1);
  return 1;
}

/* libgomp reads OMP_WAIT_POLICY when it loads, before main runs. Its
 * default spins idle threads for a while after each parallel region, which
 * on few cores steals the time OpenMP work between regions needs (measured
 * ~1.5x slower BART steps on 2 cores). Unless the user chose a policy,
 * restart once with the passive one. */
static void ensure_passive_omp_wait(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("DQBART_NO_REEXEC")) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  setenv("DQBART_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  /* exec failed: carry on with the default policy */
}

int main(int argc, char **argv) {
  ensure_passive_omp_wait(argv);
  char exe_dir[PATH_MAX];
  if (exe_directory(exe_dir, sizeof exe_dir)) {
    fprintf(stderr, "dqbart: cannot find the launcher's own location (/proc/self/exe)\n");
    return 1;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "dqbart: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  main_state = L;
  luaL_openlibs(L);
  if (set_package_path(L, exe_dir)) {
    fprintf(stderr, "dqbart: %s\n", lua_tostring(L, -1));
    return 1;
  }
  set_library_path(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, open_launcher_module);
  lua_setfield(L, -2, "dqbart.launcher");
  lua_pop(L, 2);
  signal(SIGINT, on_interrupt);

  /* status = require("dqbart.cli.main").main(exe, {argv[1..]}) */
  lua_pushcfunction(L, traceback);
  int handler = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, "dqbart.cli.main");
  if (lua_pcall(L, 1, 1, handler)) {
    fprintf(stderr, "dqbart: cannot load the Lua library: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_getfield(L, -1, "main");
  lua_pushstring(L, argv[0]);
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  int status = 1;
  if (lua_pcall(L, 2, 1, handler)) {
    fprintf(stderr, "dqbart: %s\n", lua_tostring(L, -1));
  } else {
    status = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  }
  fflush(stdout);
  lua_close(L);
  return status;
}
