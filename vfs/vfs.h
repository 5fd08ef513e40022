/*
** vfs.h: the SQLite side of ltvfs, the top layer. Nothing here is public;
** ltvfs.h at the top of the tree is the library's public interface.
*/
#ifndef LTVFS_VFS_H
#define LTVFS_VFS_H

#include "ltvfs.h"

#endif /* LTVFS_VFS_H */
